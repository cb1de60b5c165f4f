"""The asyncio I/O under :class:`~omniq_fast.AsyncClient`: the connection, scripts, mode.

An :class:`AsyncEngine` runs the pure :class:`~omniq_fast._protocol.calls.Call` objects
the client builds on one auto-pipelined :class:`~omniq_fast.aio._connection.Connection`:
it sends each call (with its wake message in the same write), loads a script the server
answers NOSCRIPT for and sends the call again (such a reply means nothing ran), and hands
the reply to the call's own reader. It decides nothing about what a reply means.

Standalone servers only, for now: a Redis Cluster is detected on first use (``INFO
cluster``, unless ``cluster=False``) and refused with :class:`ClusterNotSupported`.
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any, Awaitable, Optional, Sequence, TypeVar

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from .. import _compat
from .._engine import with_defaults
from .._protocol.calls import Call, Plan, text, wake_command
from ..errors import ConnectionLost, InvalidArgument, OmniqError, ReplyError, ServerUnreachable
from .._options import check_number
from .._scripts import Script
from .._protocol.noscript import MAX_NOSCRIPT_RETRIES, resend
from .._protocol.noscript import is_noscript as _is_noscript
from ._connection import Connection, NotSent

__all__ = ["AsyncEngine", "ClusterNotSupported"]

T = TypeVar("T")


_WAKE_CACHE = 4096
_INFO_CLUSTER = b"*2\r\n$4\r\nINFO\r\n$7\r\ncluster\r\n"


class ClusterNotSupported(OmniqError, NotImplementedError):
    """The asyncio client does not run on a Redis Cluster yet: use the blocking
    :class:`~omniq_fast.Client` there."""


def _cluster_enabled(reply: object) -> bool:
    if isinstance(reply, ReplyError):
        return False  # a server without INFO cluster (or that refuses it) is no cluster
    for line in text(reply).splitlines():
        if line.startswith("cluster_enabled:"):
            return line.split(":", 1)[1].strip() == "1"
    return False


class AsyncEngine:
    """Runs calls on one server; see :class:`~omniq_fast.AsyncClient` for the arguments."""

    def __init__(
        self,
        url: Optional[str],
        redis: Optional[aredis.Redis],
        client_name: Optional[str],
        cluster: Optional[bool],
        cluster_retry_s: float,
        core: Optional[ModuleType],
        redis_options: dict[str, Any],
    ) -> None:
        if redis is not None and (url is not None or redis_options):
            raise InvalidArgument("pass either redis= or a url (with options), not both")
        check_number("cluster_retry_s", cluster_retry_s, 0.0)
        if cluster or isinstance(redis, AsyncRedisCluster):
            raise ClusterNotSupported(
                "AsyncClient does not support Redis Cluster yet; use omniq_fast.Client"
            )
        if redis is not None and not isinstance(redis, aredis.Redis):
            raise InvalidArgument("redis= must be a redis.asyncio.Redis")
        self.owns_redis = redis is None
        self.core: ModuleType = core if core is not None else _compat
        self._checked = cluster is False  # whether the server is known not to be a cluster
        self._checking: Optional[asyncio.Future[None]] = None
        if redis is None:
            with_defaults(redis_options, client_name)
            if url is None:
                redis = aredis.Redis(**redis_options)
            else:
                redis = aredis.Redis.from_url(url, **redis_options)
        self._redis: aredis.Redis = redis
        self.connection = Connection(redis, self.core)
        self._load: dict[str, bytes] = {}
        self._wakes: dict[str, bytes] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def redis(self) -> aredis.Redis:
        """The underlying ``redis.asyncio.Redis`` (for plain reads and monitoring)."""
        return self._redis

    @property
    def is_cluster(self) -> bool:
        """Always False: a cluster is refused on first use (:class:`ClusterNotSupported`)."""
        return False

    async def close(self) -> None:
        """Close the connection; the redis client too when this engine made it."""
        await self.connection.close()
        if self.owns_redis:
            await self._redis.aclose()

    def wake_command(self, queue: str) -> bytes:
        """The wake message for ``queue`` (plain PUBLISH: standalone server), encoded once
        per queue (a bounded cache: it is on every publish's path)."""
        wake = self._wakes.get(queue)
        if wake is None:
            if len(self._wakes) >= _WAKE_CACHE:
                self._wakes.clear()
            wake = self._wakes[queue] = wake_command(self.core, queue, False)
        return wake

    # ------------------------------------------------------------------ running calls

    async def ready(self) -> None:
        """Find out on first use whether the server is a cluster (refused, for now); the
        tasks that start at once share one ``INFO cluster``."""
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
        try:
            reply = (await self.connection.request(_INFO_CLUSTER, 1, "INFO cluster"))[0]
        except ConnectionLost as exc:
            # Only the probe was on the wire: the caller's own call was never sent.
            raise ServerUnreachable(f"lost the connection asking INFO cluster: {exc}") from exc
        if _cluster_enabled(reply):
            raise ClusterNotSupported(
                "the server is a Redis Cluster node; AsyncClient does not support Redis "
                "Cluster yet: use omniq_fast.Client (or pass cluster=False to force "
                "standalone mode)"
            )
        self._checked = True

    async def run(self, call: Call[T]) -> T:
        """Send ``call`` and read its result (an error reply raises, as the call says)."""
        if not self._checked:
            await self.ready()
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

    async def run_plan(self, plan: Plan[T]) -> T:
        """Run the plan's calls in order, each answered before the next is sent."""
        return plan.join([await self.run(call) for call in plan.calls])

    async def run_many(
        self, anchor: str, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes] = ()
    ) -> list[Any]:
        """Several encoded EVALSHAs (then ``extra`` commands) in one write; every reply in
        order, error replies as :class:`ReplyError` values (``anchor``: routing, unused on
        a single server)."""
        if not self._checked:
            await self.ready()
        return await self._run_many(calls, extra)

    def send_many(
        self, anchor: str, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes] = ()
    ) -> Awaitable[list[Any]]:
        """:meth:`run_many` whose commands join the connection's write buffer now (when it
        is open and the server's mode is known) rather than when what it returns (await it:
        the replies) first runs: a batch made in the middle of a burst of calls reaches the
        server while the burst's other tasks still run."""
        if self._checked:
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
        return await self._noscript_again(calls, replies, what)

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
        self, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes]
    ) -> list[Any]:
        data, count, what = _joined(calls, extra)
        replies = await self.connection.request(data, count, what)
        return await self._noscript_again(calls, replies, what)

    async def _noscript_again(
        self, calls: Sequence[tuple[Script, bytes]], replies: list[Any], what: str
    ) -> list[Any]:
        """The calls that answered NOSCRIPT (nothing ran) sent again after SCRIPT LOAD."""
        for _ in range(MAX_NOSCRIPT_RETRIES):
            again = resend(self.core, calls, replies)
            if again is None:
                break
            again.merge(replies, await self.connection.request(again.data, again.count, what))
        return replies


def _joined(calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes]) -> tuple[bytes, int, str]:
    """Encoded calls then extra commands as one request: its bytes, reply count and name."""
    if len(calls) == 1:
        data = calls[0][1] + b"".join(extra)
    else:
        data = b"".join(call for _, call in calls) + b"".join(extra)
    return data, len(calls) + len(extra), "+".join(s.name for s, _ in calls)
