"""The connection and script plumbing every client operation builds on."""

from __future__ import annotations

import threading
import time
from types import ModuleType, TracebackType
from typing import Any, Optional, TypeVar, Union

import redis as redis_py
from redis.cluster import RedisCluster

from . import _compat
from .cluster import ClusterRouter, SlotRoute, cluster_client, is_cluster
from .errors import InvalidArgument, ProtocolError, lease_error
from .keys import queue_anchor, validate_queue_name, wake_channel
from .options import MAX_EPOCH_MS, check_int, check_number
from .scripts import script
from .transport import Transport, connect_error

__all__ = ["ClientBase", "now_ms", "text", "CONNECT_TIMEOUT_S", "SOCKET_TIMEOUT_S"]

#: Default ``socket_connect_timeout`` of the connections a client opens: how long
#: connecting (TCP, TLS, AUTH, SELECT) may take before ServerUnreachable.
CONNECT_TIMEOUT_S = 5.0
#: Default ``socket_timeout``: how long a reply may take once a command is sent before
#: ServerTimeout (its effect is unknown). redis-py's own default is no limit, so a frozen
#: server would hang a call for ever. The slowest script call (a 1000-job batch) takes
#: milliseconds; a BUSY or LOADING server answers at once with an error.
SOCKET_TIMEOUT_S = 30.0

_Self = TypeVar("_Self", bound="ClientBase")


def now_ms() -> int:
    """Milliseconds since the epoch, as every script expects."""
    return time.time_ns() // 1_000_000


def text(item: object) -> str:
    """A reply item as str (replies are read undecoded)."""
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return str(item)


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


class ClientBase:
    """A connection to one OmniQ server (Redis or Valkey).

    ``url`` is a redis-py URL (``redis://``, ``rediss://`` for TLS, ``unix://``), with ACL
    user and password in it if needed; or pass a ready ``redis.Redis`` as ``redis=``
    (its ``decode_responses`` setting does not matter). Extra keyword arguments go to
    ``redis.Redis.from_url`` (``socket_timeout=...``). Use as a context manager or call
    :meth:`close`.

    Timeouts: connections this client opens default to ``socket_connect_timeout=5`` and
    ``socket_timeout=30`` seconds (:data:`CONNECT_TIMEOUT_S`, :data:`SOCKET_TIMEOUT_S`);
    pass either keyword, or put it in the URL (``?socket_timeout=5``), to change it. A
    ``redis=`` client keeps its own settings.

    Redis Cluster is found on first use (``INFO cluster``), or forced with ``cluster=True``
    (``False`` skips the check); a ``redis.cluster.RedisCluster`` may be passed as
    ``redis=``. Each queue's commands then go to the master owning its slot, and
    ``cluster_retry_s`` bounds how long an operation waits while its slot is migrated or
    failed over (see :mod:`omniq_fast.cluster`).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        redis: Optional[Union[redis_py.Redis, RedisCluster]] = None,
        client_name: Optional[str] = None,
        cluster: Optional[bool] = None,
        cluster_retry_s: float = 10.0,
        _core: Optional[ModuleType] = None,
        **redis_options: Any,
    ) -> None:
        if redis is not None and (url is not None or redis_options):
            raise InvalidArgument("pass either redis= or a url (with options), not both")
        check_number("cluster_retry_s", cluster_retry_s, 0.0)
        self._owns_redis = redis is None
        self._core: ModuleType = _core if _core is not None else _compat
        self._cluster = cluster
        self._cluster_retry_s = cluster_retry_s
        self._router: Optional[ClusterRouter] = None
        self._mode_lock = threading.Lock()
        # The one server's transport; None when given a RedisCluster (no single server).
        self._transport: Optional[Transport] = None
        if isinstance(redis, RedisCluster):
            if cluster is False:
                raise InvalidArgument("redis= is a RedisCluster but cluster=False")
            self._cluster = True
            self._router = ClusterRouter(redis, self._core, cluster_retry_s)
            return
        if redis is None:
            if client_name is not None:
                redis_options["client_name"] = client_name
            redis_options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
            redis_options.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
            # from_url lets the URL win over keyword options, so keywords alone (the
            # OmniqClient constructor) build the client directly.
            if url is None:
                redis = redis_py.Redis(**redis_options)
            else:
                redis = redis_py.Redis.from_url(url, **redis_options)
        self._transport = Transport(redis, self._core)

    # ------------------------------------------------------------------ lifecycle

    @property
    def redis(self) -> Any:
        """The underlying redis-py client (for plain reads and monitoring): a
        ``redis.Redis``, or in cluster mode a ``redis.cluster.RedisCluster``."""
        router = self._mode()
        return self._single().redis if router is None else router.redis

    @property
    def is_cluster(self) -> bool:
        """Whether this client talks to a Redis Cluster (asks the server on first use)."""
        return self._mode() is not None

    def close(self) -> None:
        """Close the connections this client opened (not a ``redis=`` it was given)."""
        if self._owns_redis:
            if self._router is not None:
                self._router.close()
            if self._transport is not None:
                self._transport.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    @staticmethod
    def queue_base(queue_name: str) -> str:
        """``{queue}``, the prefix of every key of the queue."""
        return "{" + validate_queue_name(queue_name) + "}"

    # ------------------------------------------------------------------ internals

    def _mode(self) -> Optional[ClusterRouter]:
        """The cluster router, or None in standalone mode; the first call finds out which
        (``INFO cluster``) unless ``cluster=`` said so."""
        if self._router is not None or self._cluster is False:
            return self._router
        with self._mode_lock:
            if self._router is None:
                standalone = self._single().redis
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
                        cluster_client(standalone), self._core, self._cluster_retry_s
                    )
                self._cluster = found
        return self._router

    def _at(self, key: str) -> Union[Transport, SlotRoute]:
        """Where commands on ``key`` go: the one server, or the route to its slot's master."""
        router = self._mode()
        return self._single() if router is None else router.route(key)

    def _single(self) -> Transport:
        """The one server's transport (there is one whenever no router was given)."""
        assert self._transport is not None
        return self._transport

    def _run(self, name: str, anchor: str, *argv: bytes | str | int) -> Any:
        s = script(name)
        data = self._core.encode_command((b"EVALSHA", s.sha, b"1", anchor, *argv))
        return self._at(anchor).run_encoded(s, data)

    def _wake_command(self, queue: str) -> bytes:
        """``PUBLISH {Q}:wake 1``: sent after queueing jobs, in the same write, so idle
        consumers pick them up at once. It changes no queue state. On a cluster it is
        ``SPUBLISH`` where the server has sharded pub/sub: the message then goes to the
        queue's own master only instead of to every node."""
        router = self._mode()
        verb = b"SPUBLISH" if router is not None and router.sharded_pubsub else b"PUBLISH"
        return self._core.encode_command((verb, wake_channel(queue), b"1"))  # type: ignore[no-any-return]

    def _run_and_wake(self, name: str, queue: str, *argv: bytes | str | int) -> Any:
        """Run script ``name`` on ``queue`` and notify its wake channel in one round trip."""
        s = script(name)
        anchor = queue_anchor(queue)
        data = self._core.encode_command((b"EVALSHA", s.sha, b"1", anchor, *argv))
        reply = self._at(anchor).run_many([(s, data)], [self._wake_command(queue)])[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    @staticmethod
    def _now(now_ms_override: int) -> int:
        check_int("now_ms_override", now_ms_override, 0, MAX_EPOCH_MS)
        return now_ms_override or now_ms()

    @staticmethod
    def _status(op: str, reply: object) -> list[Any]:
        """The reply as a list whose first item is ``"OK"``; error replies raise."""
        if isinstance(reply, list) and reply:
            head = text(reply[0])
            if head == "OK":
                return reply
            if head == "ERR" and len(reply) >= 2:
                raise lease_error(op, text(reply[1]))
        raise ProtocolError(f"unexpected {op} reply: {reply!r}")
