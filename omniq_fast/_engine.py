"""The blocking I/O under :class:`~omniq_fast.Client`: connections, cluster mode, routing.

An :class:`Engine` runs the pure :class:`~omniq_fast._protocol.calls.Call` objects the client
builds: it finds out once whether the server is a cluster, routes each call by its anchor
(the one server's :class:`~omniq_fast._transport.Transport`, or the route to the slot's
master), sends it, and hands the reply to the call's own reader. It decides nothing about
what a reply means.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any, Optional, Sequence, TypeVar, Union

import redis as redis_py
from redis.cluster import RedisCluster

from . import _compat
from ._protocol.calls import Call, Plan, wake_command
from ._cluster import ClusterRouter, SlotRoute, cluster_client, is_cluster
from .errors import InvalidArgument
from ._options import check_number
from ._scripts import Script
from ._transport import KEEP_MAX, Pending, Transport, connect_error

__all__ = [
    "Engine", "Answered", "Failed", "now_ms", "with_defaults", "CONNECT_TIMEOUT_S", "SOCKET_TIMEOUT_S",
]  # fmt: skip

T = TypeVar("T")

#: Default ``socket_connect_timeout`` of the connections a client opens: how long
#: connecting (TCP, TLS, AUTH, SELECT) may take before ServerUnreachable.
CONNECT_TIMEOUT_S = 5.0
#: Default ``socket_timeout``: how long a reply may take once a command is sent before
#: ServerTimeout (its effect is unknown). redis-py's own default is no limit, so a frozen
#: server would hang a call for ever. The slowest script call (a 1000-job batch) takes
#: milliseconds; a BUSY or LOADING server answers at once with an error.
SOCKET_TIMEOUT_S = 30.0


class Answered:
    """Replies already read, behind :class:`~omniq_fast._transport.Pending`'s calls: what
    :meth:`Engine.send_many` gives where the calls cannot stay on the wire unread."""

    __slots__ = ("_replies",)

    def __init__(self, replies: list[Any]) -> None:
        self._replies = replies

    def answered(self) -> bool:
        return True

    def result(self) -> list[Any]:
        return self._replies

    def abandon(self) -> None:
        pass


class Failed:
    """Calls whose write failed (the error that stopped it; part of it may have reached
    the server): read like :class:`Answered`, :meth:`result` raises that error."""

    __slots__ = ("_error",)

    def __init__(self, error: BaseException) -> None:
        self._error = error

    def answered(self) -> bool:
        return True

    def result(self) -> list[Any]:
        raise self._error

    def abandon(self) -> None:
        pass


def now_ms() -> int:
    """Milliseconds since the epoch, as every script expects."""
    return time.time_ns() // 1_000_000


def with_defaults(redis_options: dict[str, Any], client_name: Optional[str]) -> dict[str, Any]:
    """The options a client's own connections get (both shells): its name, and the
    connect and reply timeouts unless given."""
    if client_name is not None:
        redis_options["client_name"] = client_name
    redis_options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    redis_options.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    return redis_options


def _is_cluster_at_db0(client: redis_py.Redis) -> bool:
    """Whether the server refusing the URL's database is a cluster node (asked on
    database 0): only to word that error; any failure here answers False."""
    kwargs = dict(client.connection_pool.connection_kwargs)
    kwargs["db"] = 0
    try:
        with redis_py.Redis(connection_pool=redis_py.ConnectionPool(
            connection_class=client.connection_pool.connection_class, **kwargs
        )) as probe:  # fmt: skip
            return is_cluster(probe)
    except redis_py.RedisError:
        return False


class Engine:
    """Runs calls on one server or one cluster; see :class:`~omniq_fast.Client` for the
    constructor's arguments."""

    def __init__(
        self,
        url: Optional[str],
        redis: Optional[Union[redis_py.Redis, RedisCluster]],
        client_name: Optional[str],
        cluster: Optional[bool],
        cluster_retry_s: float,
        core: Optional[ModuleType],
        redis_options: dict[str, Any],
    ) -> None:
        if redis is not None and (url is not None or redis_options):
            raise InvalidArgument("pass either redis= or a url (with options), not both")
        check_number("cluster_retry_s", cluster_retry_s, 0.0)
        self.owns_redis = redis is None
        self.core: ModuleType = core if core is not None else _compat
        self._cluster = cluster
        self._cluster_retry_s = cluster_retry_s
        self._router: Optional[ClusterRouter] = None
        self._mode_lock = threading.Lock()
        self._wakes: dict[str, bytes] = {}
        # The one server's transport; None when given a RedisCluster (no single server).
        self.transport: Optional[Transport] = None
        if isinstance(redis, RedisCluster):
            if cluster is False:
                raise InvalidArgument("redis= is a RedisCluster but cluster=False")
            self._cluster = True
            self._router = ClusterRouter(redis, self.core, cluster_retry_s)
            return
        if redis is None:
            with_defaults(redis_options, client_name)
            # from_url lets the URL win over keyword options, so keywords alone (the
            # OmniqClient constructor) build the client directly.
            if url is None:
                redis = redis_py.Redis(**redis_options)
            else:
                redis = redis_py.Redis.from_url(url, **redis_options)
        # Its own pool lends connections to nobody else: one is kept per thread calling
        # at once. A pool it was given keeps one, as the caller's code shares it.
        self.transport = Transport(redis, self.core, KEEP_MAX if self.owns_redis else 1)

    # ------------------------------------------------------------------ lifecycle

    @property
    def redis(self) -> Any:
        """The underlying redis-py client: a ``redis.Redis``, or a ``RedisCluster``."""
        router = self.mode()
        return self.single().redis if router is None else router.redis

    @property
    def is_cluster(self) -> bool:
        return self.mode() is not None

    def close(self) -> None:
        """Close the connections this engine opened (not a ``redis=`` it was given)."""
        if self.owns_redis:
            if self._router is not None:
                self._router.close()
            if self.transport is not None:
                self.transport.close()
        else:  # the connections it held go back to the pools of the client it was given
            if self._router is not None:
                self._router.release_held()
            if self.transport is not None:
                self.transport.release_held()

    # ------------------------------------------------------------------ routing

    def mode(self) -> Optional[ClusterRouter]:
        """The cluster router, or None in standalone mode; the first call finds out which
        (``INFO cluster``) unless ``cluster=`` said so."""
        if self._router is not None or self._cluster is False:
            return self._router
        with self._mode_lock:
            if self._router is None:
                standalone = self.single().redis
                try:
                    found = is_cluster(standalone) if self._cluster is None else self._cluster
                except redis_py.RedisError as exc:
                    # Connecting or the probe failed (nothing of ours ran): typed, with the
                    # server's own words (a bad database, a bad password, no server).
                    error = connect_error(exc)
                    if isinstance(error, InvalidArgument) and _is_cluster_at_db0(standalone):
                        error = InvalidArgument(f"{error}; a Redis Cluster has only database 0")
                    raise error from exc
                if found:
                    self._router = ClusterRouter(
                        cluster_client(standalone), self.core, self._cluster_retry_s
                    )
                self._cluster = found
        return self._router

    def at(self, key: str) -> Union[Transport, SlotRoute]:
        """Where commands on ``key`` go: the one server, or the route to its slot's master."""
        router = self.mode()
        return self.single() if router is None else router.route(key)

    def single(self) -> Transport:
        """The one server's transport (there is one whenever no router was given)."""
        assert self.transport is not None
        return self.transport

    def wake_command(self, queue: str) -> bytes:
        """The wake message for ``queue``, sharded where the cluster has sharded pub/sub
        (encoded once per queue: every publish sends one)."""
        data = self._wakes.get(queue)
        if data is None:
            router = self.mode()
            data = wake_command(self.core, queue, router is not None and router.sharded_pubsub)
            if len(self._wakes) >= 4096:
                self._wakes.clear()
            self._wakes[queue] = data
        return data

    # ------------------------------------------------------------------ running calls

    def run(self, call: Call[T]) -> T:
        """Send ``call`` where its anchor lives and read its result."""
        transport = self.transport
        if call.script is not None and transport is not None and self._cluster is False:
            # The hot path of single calls (a publish loop): a server known to be
            # standalone has one place to send to, so no routing, and no lists built
            # for run_many's general case.
            wake = call.wake
            extra = b"" if wake is None else (self._wakes.get(wake) or self.wake_command(wake))
            return call.result(transport.run_one(call.script, call.data, extra))
        target = self.at(call.anchor)
        if call.script is None:
            reply = target.read_encoded(call.data, f"read of {call.anchor}")
        elif call.wake is not None:
            reply = target.run_many([(call.script, call.data)], [self.wake_command(call.wake)])[0]
        else:
            reply = target.run_many([(call.script, call.data)])[0]
        return call.result(reply)

    def run_plan(self, plan: Plan[T]) -> T:
        """Run the plan's calls in order, each answered before the next is sent."""
        return plan.join([self.run(call) for call in plan.calls])

    def run_many(
        self, anchor: str, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes] = ()
    ) -> list[Any]:
        """Several encoded EVALSHAs on ``anchor``'s node (then ``extra`` commands) in one
        round trip; every reply in order, error replies as :class:`ReplyError` values."""
        return self.at(anchor).run_many(calls, extra)

    def send_many(
        self,
        anchor: str,
        calls: Sequence[tuple[Script, bytes]],
        after: Union[Pending, Answered, Failed, None] = None,
    ) -> Union[Pending, Answered]:
        """:meth:`run_many` in two halves: the calls written now, their replies read from
        what this returns (``.answered()`` peeks, ``.result()`` reads, as run_many would
        return or raise), after those of ``after`` (calls sent before, not read yet). On
        a single server known to be one the calls stay on the wire while the caller
        works; in cluster mode (redirects, retries) or before the first call has told
        which, they are answered here, as run_many."""
        transport = self.transport
        if transport is not None and self._cluster is False:
            return transport.send_many(calls, after if isinstance(after, Pending) else None)
        return Answered(self.run_many(anchor, calls))

