"""The asyncio I/O under :class:`~omniq_fast.AsyncClient`: the connection, scripts, mode.

An :class:`AsyncEngine` runs the pure :class:`~omniq_fast._protocol.calls.Call` objects
the client builds on one auto-pipelined :class:`~omniq_fast.aio._connection.Connection`:
it sends each call (with its wake message in the same write), loads a script the server
answers NOSCRIPT for and sends the call again (such a reply means nothing ran), and hands
the reply to the call's own reader. It decides nothing about what a reply means.

On a Redis Cluster (found on first use with ``INFO cluster`` unless ``cluster=`` says, or
given as a ``redis.asyncio.cluster.RedisCluster``) each call goes through the
:class:`~omniq_fast.aio._cluster.AsyncClusterRouter` to its slot's master instead, on one
such connection per node.
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any, Awaitable, Optional, Sequence, TypeVar, Union

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from .. import _compat
from .._engine import with_defaults
from .._protocol.calls import Call, Plan, text, wake_command
from ..errors import ConnectionLost, InvalidArgument, ReplyError, ServerUnreachable
from .._options import check_number
from .._scripts import Script
from .._protocol.noscript import MAX_NOSCRIPT_RETRIES, resend
from .._protocol.noscript import is_noscript as _is_noscript
from ._cluster import AsyncClusterRouter, cluster_client
from ._connection import Connection, NotSent

__all__ = ["AsyncEngine"]

T = TypeVar("T")


_WAKE_CACHE = 4096
_INFO_CLUSTER = b"*2\r\n$4\r\nINFO\r\n$7\r\ncluster\r\n"


def _cluster_enabled(reply: object) -> bool:
    if isinstance(reply, ReplyError):
        return False  # a server without INFO cluster (or that refuses it) is no cluster
    for line in text(reply).splitlines():
        if line.startswith("cluster_enabled:"):
            return line.split(":", 1)[1].strip() == "1"
    return False


class AsyncEngine:
    """Runs calls on one server or one cluster; see :class:`~omniq_fast.AsyncClient` for
    the arguments."""

    def __init__(
        self,
        url: Optional[str],
        redis: Optional[Union[aredis.Redis, AsyncRedisCluster]],
        client_name: Optional[str],
        cluster: Optional[bool],
        cluster_retry_s: float,
        core: Optional[ModuleType],
        redis_options: dict[str, Any],
    ) -> None:
        if redis is not None and (url is not None or redis_options):
            raise InvalidArgument("pass either redis= or a url (with options), not both")
        check_number("cluster_retry_s", cluster_retry_s, 0.0)
        if redis is not None and not isinstance(redis, (aredis.Redis, AsyncRedisCluster)):
            raise InvalidArgument(
                "redis= must be a redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster"
            )
        self.owns_redis = redis is None
        self.core: ModuleType = core if core is not None else _compat
        self._cluster_retry_s = cluster_retry_s
        self._checked = cluster is False  # whether the mode is known and the router ready
        self._checking: Optional[asyncio.Future[None]] = None
        self._load: dict[str, bytes] = {}
        self._wakes: dict[str, bytes] = {}
        #: The cluster router, or None in standalone mode (or while the mode is unknown).
        self.router: Optional[AsyncClusterRouter] = None
        self._redis: Optional[aredis.Redis] = None  # the one server (or the seed node)
        self._connection: Optional[Connection] = None
        if isinstance(redis, AsyncRedisCluster):
            if cluster is False:
                raise InvalidArgument("redis= is a RedisCluster but cluster=False")
            self.router = AsyncClusterRouter(
                redis, self.core, cluster_retry_s, self._run_many, owns=False
            )
            self._checked = False  # the router reads its slot map on first use
            return
        if redis is None:
            with_defaults(redis_options, client_name)
            if url is None:
                redis = aredis.Redis(**redis_options)
            else:
                redis = aredis.Redis.from_url(url, **redis_options)
        self._redis = redis
        self._connection = Connection(redis, self.core)
        if cluster:
            self.router = AsyncClusterRouter(
                cluster_client(redis), self.core, cluster_retry_s, self._run_many, owns=True
            )

    # ------------------------------------------------------------------ lifecycle

    @property
    def redis(self) -> Union[aredis.Redis, AsyncRedisCluster]:
        """The underlying redis-py client (for plain reads and monitoring): a
        ``redis.asyncio.Redis``, or in cluster mode (once known) a
        ``redis.asyncio.cluster.RedisCluster``."""
        if self.router is not None:
            return self.router.redis
        assert self._redis is not None
        return self._redis

    @property
    def mode_known(self) -> bool:
        """Whether the server's mode (cluster or not) is known, so calls can be encoded
        for it without waiting for :meth:`ready`."""
        return self._checked

    @property
    def is_cluster(self) -> bool:
        """Whether calls go to a cluster (known after the first call, or from ``cluster=``
        / a ``RedisCluster`` given)."""
        return self.router is not None

    @property
    def connection(self) -> Connection:
        """The one server's pipelined connection (standalone mode)."""
        assert self._connection is not None
        return self._connection

    async def close(self) -> None:
        """Close the connections; the redis clients too when this engine made them."""
        if self._connection is not None:
            await self._connection.close()
        if self.router is not None:
            await self.router.close()
        if self.owns_redis and self._redis is not None:
            await self._redis.aclose()

    def wake_command(self, queue: str) -> bytes:
        """The wake message for ``queue``, sharded where the cluster has sharded pub/sub,
        encoded once per queue (a bounded cache: it is on every publish's path). In
        cluster mode it is asked only once the router is ready (after :meth:`ready`)."""
        wake = self._wakes.get(queue)
        if wake is None:
            sharded = self.router is not None and self.router.sharded_pubsub
            wake = wake_command(self.core, queue, sharded)
            if self._checked:  # before, the mode may still change what it should be
                if len(self._wakes) >= _WAKE_CACHE:
                    self._wakes.clear()
                self._wakes[queue] = wake
        return wake

    async def pubsub(self, channel: str) -> tuple[Any, bool]:
        """A new pub/sub object able to hear ``channel`` and whether to subscribe sharded
        (``SSUBSCRIBE``): the one server's, or that of the channel's master."""
        await self.ready()
        router = self.router
        if router is None:
            assert self._redis is not None
            return self._redis.pubsub(), False
        route = router.route(channel)
        conn = await route.connection()
        return conn.redis.pubsub(), router.sharded_pubsub

    # ------------------------------------------------------------------ running calls

    async def ready(self) -> None:
        """Find out on first use whether the server is a cluster (and read the slot map if
        so); the tasks that start at once share one ``INFO cluster``."""
        if self._checked:
            return
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._check_mode())
        checking = self._checking
        try:
            await asyncio.shield(checking)
        finally:
            if checking.done() and self._checking is checking:
                self._checking = None  # a failed check is made again by the next call

    async def _check_mode(self) -> None:
        if self.router is not None:
            await self.router.start()
            await self._drop_single()
            self._checked = True
            return
        try:
            reply = (await self.connection.request(_INFO_CLUSTER, 1, "INFO cluster"))[0]
        except ConnectionLost as exc:
            # Only the probe was on the wire: the caller's own call was never sent.
            raise ServerUnreachable(f"lost the connection asking INFO cluster: {exc}") from exc
        if _cluster_enabled(reply):
            assert self._redis is not None
            router = AsyncClusterRouter(
                cluster_client(self._redis), self.core, self._cluster_retry_s,
                self._run_many, owns=True,
            )  # fmt: skip
            await router.start()
            self.router = router
            await self._drop_single()
        self._checked = True

    async def _drop_single(self) -> None:
        """In cluster mode the seed node's own connection is not used: close it."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def run(self, call: Call[T]) -> T:
        """Send ``call`` and read its result (an error reply raises, as the call says)."""
        if not self._checked:
            await self.ready()
        if self.router is not None:
            return await self._run_routed(call)
        s = call.script
        if s is None:
            reply = await self._read(call.data, f"read of {call.anchor}", call.resend_safe)
            return call.result(reply)
        # The hot path: one request, the wake message right after the call.
        if call.wake is None:
            data, count = call.data, 1
        else:
            data, count = call.data + self.wake_command(call.wake), 2
        reply = (await self.connection.request(data, count, s.name))[0]
        tries = 0
        while _is_noscript(reply) and tries < MAX_NOSCRIPT_RETRIES:
            # Nothing ran: load the script and send the call again (its wake went already).
            tries += 1
            loaded, reply = await self.connection.request(
                self.load_command(s) + call.data, 2, s.name
            )
            if isinstance(loaded, ReplyError):
                raise loaded
        return call.result(reply)

    async def _run_routed(self, call: Call[T]) -> T:
        assert self.router is not None
        route = self.router.route(call.anchor)
        s = call.script
        if s is None:
            return call.result(await route.read(call.data, f"read of {call.anchor}"))
        wakes = () if call.wake is None else (self.wake_command(call.wake),)
        return call.result((await route.run_many([(s, call.data)], wakes))[0])

    async def run_plan(self, plan: Plan[T]) -> T:
        """Run the plan's calls in order, each answered before the next is sent."""
        return plan.join([await self.run(call) for call in plan.calls])

    async def run_many(
        self, anchor: str, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes] = ()
    ) -> list[Any]:
        """Several encoded EVALSHAs (then ``extra`` commands) in one write; every reply in
        order, error replies as :class:`ReplyError` values (``anchor``: the key whose
        slot's master runs them on a cluster)."""
        if not self._checked:
            await self.ready()
        if self.router is not None:
            return await self.router.route(anchor).run_many(calls, extra)
        return await self._run_many(self.connection, calls, extra)

    def send_many(
        self, anchor: str, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes] = ()
    ) -> Awaitable[list[Any]]:
        """:meth:`run_many` whose commands join the connection's write buffer now (when it
        is open and the server's mode is known) rather than when what it returns (await it:
        the replies) first runs: a batch made in the middle of a burst of calls reaches the
        server while the burst's other tasks still run."""
        if self._checked and self.router is None:  # a cluster routes each call (run_many)
            data, count, what = _joined(calls, extra)
            sent = self.connection.submit_now(data, count, what)
            if sent is not None:
                return self._sent_many(anchor, calls, extra, sent, what)
        return self.run_many(anchor, calls, extra)

    async def _sent_many(
        self,
        anchor: str,
        calls: Sequence[tuple[Script, bytes]],
        extra: Sequence[bytes],
        sent: asyncio.Future[list[Any]],
        what: str,
    ) -> list[Any]:
        try:
            replies = await sent
        except NotSent:  # nothing of it reached the server: a fresh connection takes it
            return await self.run_many(anchor, calls, extra)
        return await self._noscript_again(self.connection, calls, replies, what, extra)

    async def _read(self, data: bytes, what: str, resend_safe: bool) -> Any:
        """A plain command; a read is sent again once when its reply was lost."""
        try:
            return (await self.connection.request(data, 1, what))[0]
        except ConnectionLost:
            if not resend_safe:
                raise
            return (await self.connection.request(data, 1, what))[0]

    def load_command(self, s: Script) -> bytes:
        """``SCRIPT LOAD`` of ``s``, encoded (once per script)."""
        load = self._load.get(s.name)
        if load is None:
            load = self._load[s.name] = self.core.encode_command((b"SCRIPT", b"LOAD", s.source))
        return load

    async def _run_many(
        self, conn: Connection, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes]
    ) -> list[Any]:
        """The calls (then ``extra``) in one write on ``conn``; a NOSCRIPT reply (nothing
        ran) gets the script loaded and its call sent again."""
        data, count, what = _joined(calls, extra)
        replies = await conn.request(data, count, what)
        return await self._noscript_again(conn, calls, replies, what, extra)

    async def _noscript_again(
        self,
        conn: Connection,
        calls: Sequence[tuple[Script, bytes]],
        replies: list[Any],
        what: str,
        wakes: Sequence[bytes] = (),
    ) -> list[Any]:
        """The calls that answered NOSCRIPT (nothing ran) sent again on ``conn`` after
        SCRIPT LOAD, then ``wakes`` again."""
        for _ in range(MAX_NOSCRIPT_RETRIES):
            again = resend(self.core, calls, replies, wakes)
            if again is None:
                break
            again.merge(replies, await conn.request(again.data, again.count, what))
        return replies


def _joined(calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes]) -> tuple[bytes, int, str]:
    """Encoded calls then extra commands as one request: its bytes, reply count and name."""
    if len(calls) == 1:
        data = calls[0][1] + b"".join(extra)
    else:
        data = b"".join(call for _, call in calls) + b"".join(extra)
    return data, len(calls) + len(extra), "+".join(s.name for s, _ in calls)
