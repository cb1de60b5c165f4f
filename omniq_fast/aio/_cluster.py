"""Redis Cluster mode of the asyncio client: each call goes to the master of its queue's slot.

The same rules as the blocking :mod:`omniq_fast._cluster` (the decisions are shared, in
:mod:`omniq_fast._protocol.routing`): ``MOVED`` is followed, ``ASK`` only by plain reads
(scripts wait for the migration to end), ``TRYAGAIN``/``CLUSTERDOWN``/a refused connection
wait, a script whose effect a lost connection made unknown is sent again only when its
second run changes nothing, and all waiting stops after ``retry_s`` with
:class:`~omniq_fast.errors.ClusterUnavailable` (the operation did not run).

Topology comes from redis-py's ``redis.asyncio.cluster.RedisCluster`` (its node manager
reads ``CLUSTER SLOTS``); the commands do not go through it. Each master gets one
auto-pipelined :class:`~omniq_fast.aio._connection.Connection` of ours, so the calls that
many tasks make in one loop turn go out in one write per node.
"""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any, Awaitable, Callable, Optional, Sequence

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from .._protocol import routing
from .._protocol.calls import text
from .._scripts import Script
from ..errors import ClusterUnavailable, ConnectionLost, InvalidArgument, ReplyError
from ..errors import ServerUnreachable
from ._connection import Connection

__all__ = ["AsyncClusterRouter", "AsyncSlotRoute", "cluster_client"]

_ASKING = b"*1\r\n$6\r\nASKING\r\n"
_INFO_SERVER = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"
#: What the router's ``send`` does: encoded EVALSHAs (then ``extra``) on one node's
#: connection, NOSCRIPT handled, every reply in order (the engine's, shared by both modes).
Send = Callable[[Connection, Sequence[tuple[Script, bytes]], Sequence[bytes]], Awaitable[list[Any]]]
#: The RedisCluster constructor takes named options only; the others a URL or a pool may
#: carry (``db``, ``retry``, parser classes) are not for it.
_CLUSTER_OPTIONS = frozenset((
    "username", "password", "credential_provider", "client_name", "encoding",
    "encoding_errors", "decode_responses", "health_check_interval", "socket_timeout",
    "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
    "socket_read_size", "protocol", "ssl_ca_certs", "ssl_ca_data", "ssl_cert_reqs",
    "ssl_certfile", "ssl_check_hostname", "ssl_keyfile", "ssl_min_version", "ssl_ciphers",
    "lib_name", "lib_version",
))  # fmt: skip


def cluster_client(client: aredis.Redis) -> RedisCluster:
    """A ``redis.asyncio.cluster.RedisCluster`` reaching the cluster through ``client``'s
    node, with the same connection settings (password, TLS, timeouts, protocol)."""
    pool: Any = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if kwargs.pop("db", 0):
        raise InvalidArgument("a Redis Cluster has only database 0; drop the /db from the URL")
    host, port = kwargs.pop("host", "localhost"), kwargs.pop("port", 6379)
    options = {k: v for k, v in kwargs.items() if k in _CLUSTER_OPTIONS}
    if issubclass(pool.connection_class, SSLConnection):
        options["ssl"] = True
    return RedisCluster(host=host, port=port, **options)


class _Patience(routing.Patience):
    """:class:`~omniq_fast._protocol.routing.Patience` on the monotonic clock, sleeping
    on the event loop."""

    __slots__ = ()

    def __init__(self, retry_s: float, what: str) -> None:
        super().__init__(retry_s, what, time.monotonic())

    async def sleep(self, why: str) -> None:
        await asyncio.sleep(self.wait(why, time.monotonic()))


class AsyncClusterRouter:
    """The cluster's topology (a ``RedisCluster``'s node manager) and one pipelined
    :class:`Connection` per node, by ``host:port``."""

    def __init__(
        self, client: RedisCluster, core: ModuleType, retry_s: float, send: Send, owns: bool
    ) -> None:
        self.redis = client
        self.retry_s = retry_s
        self.core = core
        self.send = send
        self._owns = owns
        self._connections: dict[str, Connection] = {}
        self._clients: list[aredis.Redis] = []
        self._slots: routing.SlotBook[AsyncSlotRoute] = routing.SlotBook(
            lambda slot: AsyncSlotRoute(self, slot)
        )
        self._refreshed_at = 0.0
        self._refreshing: Optional[asyncio.Future[None]] = None
        self._started = False
        #: Sharded pub/sub (SPUBLISH/SSUBSCRIBE) came with Redis 7 (Valkey reports 7.2).
        self.sharded_pubsub = False

    async def start(self) -> None:
        """Read the slot map and the server version (once; connect errors are typed)."""
        if self._started:
            return
        try:
            await self.redis.initialize()
        except Exception as exc:
            raise ServerUnreachable(f"cannot read the cluster's slot map: {exc}") from exc
        self._refreshed_at = time.monotonic()
        node = self.redis.get_random_node()
        info = (await self.connection(node.name).request(_INFO_SERVER, 1, "INFO server"))[0]
        version = "0"
        if not isinstance(info, ReplyError):
            for line in text(info).splitlines():
                if line.startswith("redis_version:"):
                    version = line.split(":", 1)[1].strip()
        self.sharded_pubsub = int(version.split(".")[0] or 0) >= 7
        self._started = True

    # ------------------------------------------------------------------ topology

    def route(self, key: str) -> "AsyncSlotRoute":
        """The route of ``key``'s slot (cached: routes hold no node, only the slot)."""
        return self._slots.route(key_slot(key.encode()))

    def owner(self, slot: int) -> Optional[Connection]:
        """The connection to ``slot``'s master, or None if no master is known to serve it."""
        try:
            node = self.redis.nodes_manager.get_node_from_slot(slot)
            mapped: Optional[str] = node.name
        except Exception:  # SlotNotCoveredError, or a map being rebuilt
            mapped = None
        address = self._slots.owner(slot, mapped)
        return None if address is None else self.at_address(address)

    def at_address(self, address: str) -> Optional[Connection]:
        """The connection to the node at ``host:port`` (None for a malformed address)."""
        conn = self._connections.get(address)
        if conn is None:
            parsed = routing.parse_address(address)
            if parsed is None:
                return None
            conn = self.connection(address)
        return conn

    def connection(self, address: str) -> Connection:
        """The pipelined connection to ``address``, made with the cluster's settings."""
        conn = self._connections.get(address)
        if conn is not None:
            return conn
        parsed = routing.parse_address(address)
        assert parsed is not None
        node = self.redis.nodes_manager.get_node(node_name=address)
        if node is None:  # a MOVED to a node the map does not know yet: any node's settings
            node = next(iter(self.redis.nodes_manager.nodes_cache.values()), None)
        if node is not None:
            kwargs = dict(node.connection_kwargs)
            connection_class = node.connection_class
        else:
            kwargs = dict(self.redis.connection_kwargs)
            connection_class = kwargs.pop("connection_class")
        for name in ("max_connections", "response_callbacks", "connection_class"):
            kwargs.pop(name, None)
        kwargs["host"], kwargs["port"] = parsed
        # Retries are ours (bounded by retry_s, on a fresh slot map): a failed connect
        # answers at once.
        kwargs["retry"] = Retry(NoBackoff(), 0)
        pool = aredis.ConnectionPool(connection_class=connection_class, **kwargs)
        client = aredis.Redis(connection_pool=pool)
        self._clients.append(client)
        conn = self._connections[address] = Connection(client, self.core)
        return conn

    def moved(self, slot: int, address: str) -> None:
        """Record a ``MOVED slot address`` answer (used until the map agrees)."""
        self._slots.moved(slot, address)

    async def settle(
        self, redirects: Sequence[tuple[int, tuple[str, str]]], patience: _Patience
    ) -> None:
        """React to one round of redirections before trying again, as the core decides:
        note the owners ``MOVED`` names, re-read the map, wait (or raise ClusterUnavailable)."""
        settlement = routing.settle(redirects, patience, time.monotonic())
        for slot, address in settlement.moved:
            self.moved(slot, address)
        if settlement.moved or settlement.force_refresh:
            await self.refresh(force=settlement.force_refresh)
        if settlement.give_up is not None:
            raise settlement.give_up
        if settlement.delay:
            await asyncio.sleep(settlement.delay)

    async def refresh(self, force: bool = False) -> None:
        """Re-read the slot map (the tasks that ask at once share one read; skipped if
        one just ended, unless ``force``)."""
        if self._refreshing is None:
            if not routing.due_refresh(force, self._refreshed_at, time.monotonic()):
                return
            self._refreshing = asyncio.ensure_future(self._refresh())
        refreshing = self._refreshing
        try:
            await asyncio.shield(refreshing)
        finally:
            if refreshing.done() and self._refreshing is refreshing:
                self._refreshing = None

    async def _refresh(self) -> None:
        try:
            await self.redis.nodes_manager.initialize()
        except Exception:
            pass  # no node reachable now; the caller's patience decides what next
        self._refreshed_at = time.monotonic()

    async def close(self) -> None:
        """Close every node connection; the RedisCluster too when this client made it."""
        for conn in list(self._connections.values()):
            await conn.close()
        for client in self._clients:
            await client.aclose()
        self._connections.clear()
        self._clients.clear()
        if self._owns:
            await self.redis.aclose()


class AsyncSlotRoute:
    """Runs commands on whichever master owns one slot, following the cluster as it moves."""

    __slots__ = ("_router", "slot")

    def __init__(self, router: AsyncClusterRouter, slot: int) -> None:
        self._router = router
        self.slot = slot

    async def owner(self, patience: _Patience) -> Connection:
        """The slot's master now, re-reading the map and waiting while none is known."""
        router = self._router
        while True:
            conn = router.owner(self.slot)
            if conn is not None:
                return conn
            await router.refresh()
            await patience.sleep(f"no master serves slot {self.slot}")

    async def _retrying(
        self, patience: _Patience, send: Callable[[Connection], Awaitable[list[Any]]]
    ) -> list[Any]:
        """``send`` to the owner until it connects. ServerUnreachable comes only from
        connecting, before anything was sent (a failure after sending is ConnectionLost),
        so it is safe to try again, on a fresh map."""
        while True:
            conn = await self.owner(patience)
            try:
                return await send(conn)
            except ServerUnreachable as exc:
                await self._router.refresh(force=True)
                await patience.sleep(f"cannot connect to the master of slot {self.slot}: {exc}")

    async def run_many(
        self, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes] = ()
    ) -> list[Any]:
        """The encoded EVALSHAs (then ``extra``) on the slot's master; the redirected ones
        (which did not run) are sent again, in order, until each has a real reply.

        If the slot stays unavailable, :class:`ClusterUnavailable` is raised when no script
        ran; when some did, the ones that did not get a ClusterUnavailable *value*."""
        router = self._router
        what = "+".join(script.name for script, _ in calls) or "command"
        patience = _Patience(router.retry_s, what)
        replies: list[Any] = [None] * (len(calls) + len(extra))
        todo = list(range(len(replies)))
        resend_safe = routing.resend_safe(script.name for script, _ in calls)
        while todo:
            sub_calls = [calls[i] for i in todo if i < len(calls)]
            sub_extra = [extra[i - len(calls)] for i in todo if i >= len(calls)]
            try:
                try:
                    got = await self._retrying(
                        patience, lambda c: router.send(c, sub_calls, sub_extra)
                    )
                except ConnectionLost:
                    if not resend_safe:
                        raise
                    await router.refresh(force=True)
                    await patience.sleep(f"connection lost to the master of slot {self.slot}")
                    continue
                redirected, seen = routing.first_redirect(got)
                left = [todo[j] for j in redirected]
                for i, reply in zip(todo, got):
                    if i not in left:
                        replies[i] = reply
                todo = left
                if seen is not None:
                    await router.settle([(self.slot, seen)], patience)
            except ClusterUnavailable as exc:
                if all(i in todo for i in range(len(calls))):
                    raise  # no script ran (a wake in ``extra`` changes no state)
                for i in todo:
                    replies[i] = exc
                break
        return replies

    async def read(self, data: bytes, what: str) -> Any:
        """One encoded read on the slot's master; its reply, an error reply as a value.
        Follows ``MOVED`` and ``ASK``, and, being a read, is sent again after a lost
        connection."""
        router = self._router
        patience = _Patience(router.retry_s, what)
        asking: Optional[Connection] = None
        while True:
            target, asking = asking, None

            async def send(owner: Connection) -> list[Any]:
                if target is None:
                    return await owner.request(data, 1, what)
                return (await target.request(_ASKING + data, 2, what))[1:]

            try:
                reply = (await self._retrying(patience, send))[0]
            except ConnectionLost:
                await router.refresh(force=True)
                await patience.sleep(f"connection lost to the master of slot {self.slot}")
                continue
            redirect = routing.redirect_of(reply)
            if redirect is None:
                return reply
            kind, address = redirect
            if kind == "ASK" and address:
                asking = router.at_address(address)
                if asking is not None:
                    continue
            await router.settle([(self.slot, redirect)], patience)

    async def connection(self) -> Connection:
        """The slot's master now (for streams, which handle redirections themselves)."""
        return await self.owner(_Patience(self._router.retry_s, "stream"))
