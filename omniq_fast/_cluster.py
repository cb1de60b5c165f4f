"""Redis Cluster routing: each queue's commands go straight to the master that owns its slot.

Every key of a queue carries the ``{queue}`` hash tag, so a queue lives in one slot and a
script touching it runs whole on one master. redis-py's ``RedisCluster`` keeps the topology
(which master serves which slot, a connection pool per node); we write to those nodes
through the same :class:`~omniq_fast._transport.Transport` as in standalone mode.

How redirections are handled, and why:

* ``MOVED`` — the slot lives elsewhere and the command did not run. Refresh the topology
  and send it to the new owner. Safe for every command, scripts included.
* ``ASK`` — the slot is being migrated. For plain reads we follow it (``ASKING`` and the
  command on the target). Scripts are *not* followed: an OmniQ script declares one key,
  ``{Q}:meta``, which never exists, and touches a dozen undeclared keys of the slot. While a
  slot is ``MIGRATING`` the source therefore answers ``ASK`` to every script before running
  it, and the target would run it against whatever part of the queue has been copied so
  far. So a script waits (backing off) until the migration ends and the source answers
  ``MOVED``: no script runs on a half-moved queue, whatever tool moves it.
* ``TRYAGAIN``, ``CLUSTERDOWN`` and a refused connection: nothing ran; wait and retry.
* A connection lost *after* a script was sent: its effect is unknown. Only the scripts in
  :data:`RESEND_SAFE` are sent again (a second run changes nothing more);
  every other script raises :class:`~omniq_fast.errors.ConnectionLost`.

All retrying stops after ``retry_s`` seconds with :class:`ClusterUnavailable`, and that error
always means the operation did not run.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any, Callable, Optional, Sequence, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.connection import SSLConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._protocol import routing
from ._protocol.routing import RESEND_SAFE, redirect_of
from .errors import ClusterUnavailable, ConnectionLost, InvalidArgument, ReplyError
from ._scripts import Script
from ._transport import Transport

__all__ = [
    "ClusterRouter", "SlotRoute", "RESEND_SAFE", "redirect_of", "is_cluster", "cluster_client",
]

_CONNECT_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
_ASKING = b"*1\r\n$6\r\nASKING\r\n"

T = TypeVar("T")


def _major_version(client: RedisCluster) -> int:
    node = client.get_random_node()  # type: ignore[no-untyped-call]
    info = client.get_redis_connection(node).info("server")
    return int(str(info.get("redis_version", "0")).split(".")[0])


def is_cluster(client: redis.Redis) -> bool:
    """Whether the server behind ``client`` runs in cluster mode (``INFO cluster``)."""
    info = client.info("cluster")
    return bool(int(info.get("cluster_enabled", 0)))


def cluster_client(client: redis.Redis) -> RedisCluster:
    """A ``RedisCluster`` reaching the cluster through ``client``'s node, with the same
    connection settings (password, TLS, timeouts, protocol)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if kwargs.pop("db", 0):
        raise InvalidArgument("a Redis Cluster has only database 0; drop the /db from the URL")
    host, port = kwargs.pop("host", "localhost"), kwargs.pop("port", 6379)
    if issubclass(pool.connection_class, SSLConnection):
        kwargs["ssl"] = True  # the ssl_* settings are in kwargs already
    return RedisCluster(host=host, port=port, **kwargs)


class _Patience(routing.Patience):
    """:class:`~omniq_fast._protocol.routing.Patience` on the monotonic clock: ``sleep``
    sleeps the delay the core decides (or raises ClusterUnavailable)."""

    __slots__ = ()

    def __init__(self, retry_s: float, what: str) -> None:
        super().__init__(retry_s, what, time.monotonic())

    def sleep(self, why: str) -> None:
        time.sleep(self.wait(why, time.monotonic()))


class ClusterRouter:
    """The cluster's topology and one :class:`Transport` per master.

    ``client`` is a ``RedisCluster``; its node manager is the topology, refreshed here on
    ``MOVED`` and on connection failures (at most once per ``routing.MIN_REFRESH_S`` unless the
    slot map is known to be stale).
    """

    def __init__(self, client: RedisCluster, core: ModuleType, retry_s: float) -> None:
        self.redis = client
        self.retry_s = retry_s
        self._core = core
        self._lock = threading.Lock()
        self._transports: dict[str, Transport] = {}
        self._slots: routing.SlotBook[SlotRoute] = routing.SlotBook(
            lambda slot: SlotRoute(self, slot)
        )
        self._refreshed_at = 0.0
        #: Sharded pub/sub (SPUBLISH/SSUBSCRIBE) came with Redis 7 (Valkey reports 7.2).
        self.sharded_pubsub = _major_version(client) >= 7

    # ------------------------------------------------------------------ topology

    def route(self, key: str) -> "SlotRoute":
        """The route of ``key``'s slot (cached: routes hold no node, only the slot)."""
        return self._slots.route(key_slot(key.encode()))

    def owner(self, slot: int) -> Optional[Transport]:
        """The transport of ``slot``'s master, or None if no master is known to serve it.

        A ``MOVED`` reply names the new owner with authority (the node that gave the slot
        up); it is used until the slot map agrees, since a map refreshed from a node that
        has not heard of the move yet would send us back."""
        try:
            node = self.redis.nodes_manager.get_node_from_slot(slot)
        except Exception:  # SlotNotCoveredError, or a cache being rebuilt
            node = None
        address = self._slots.owner(slot, None if node is None else node.name)
        if address is None:
            return None
        if node is not None and node.name == address:
            return self._transport(node)
        return self.at_address(address)

    def moved(self, slot: int, address: str) -> None:
        """Record a ``MOVED slot address`` answer, and refresh the map for other slots."""
        self._slots.moved(slot, address)
        self.refresh()

    def at_address(self, address: str) -> Optional[Transport]:
        """The transport of the node at ``host:port``, connected like the others."""
        node = self.redis.get_node(node_name=address)  # type: ignore[no-untyped-call]
        if node is not None:
            return self._transport(node)
        transport = self._transports.get(address)
        if transport is None:
            parsed = routing.parse_address(address)
            if parsed is None:
                return None
            kwargs = self.redis.get_connection_kwargs()  # type: ignore[no-untyped-call]
            conn = redis.Redis(host=parsed[0], port=parsed[1], **kwargs)
            with self._lock:
                transport = self._transports.setdefault(address, Transport(conn, self._core))
        return transport

    def _transport(self, node: Any) -> Transport:
        conn = self.redis.get_redis_connection(node)
        transport = self._transports.get(node.name)
        if transport is None or transport.redis is not conn:
            with self._lock:
                transport = self._transports.get(node.name)
                if transport is None or transport.redis is not conn:
                    transport = self._transports[node.name] = Transport(conn, self._core)
        return transport

    def settle(
        self, redirects: Sequence[tuple[int, tuple[str, str]]], patience: _Patience
    ) -> None:
        """React to the redirections of one round, ``(slot, (kind, address))`` each, before
        trying again: note the owner each ``MOVED`` names, and wait unless every one was
        simply moved. The first ``MOVED`` needs no sleep; later ones mean the nodes do not
        agree yet (a failover being announced). ``ASK`` needs no new map, only time."""
        settlement = routing.settle(redirects, patience, time.monotonic())
        for slot, address in settlement.moved:
            self.moved(slot, address)
        if settlement.force_refresh:
            self.refresh(force=True)
        if settlement.give_up is not None:
            raise settlement.give_up
        if settlement.delay:
            time.sleep(settlement.delay)

    def refresh(self, force: bool = False) -> None:
        """Re-read the slot map from the cluster (skipped if another thread just did)."""
        with self._lock:
            if not routing.due_refresh(force, self._refreshed_at, time.monotonic()):
                return
            try:
                self.redis.nodes_manager.initialize()
            except Exception:
                # No node reachable right now; the caller's patience decides what next.
                pass
            self._refreshed_at = time.monotonic()

    def release_held(self) -> None:
        """Give every node transport's held connection back to its pool."""
        with self._lock:
            transports = list(self._transports.values())
        for transport in transports:
            transport.release_held()

    def close(self) -> None:
        self.release_held()
        self.redis.close()


class SlotRoute:
    """Runs commands on whichever master owns one slot, following the cluster as it changes.

    It has the methods of :class:`Transport` the client uses, so client code is the same in
    both modes.
    """

    __slots__ = ("_router", "slot")

    def __init__(self, router: ClusterRouter, slot: int) -> None:
        self._router = router
        self.slot = slot

    def owner(self, patience: _Patience) -> Transport:
        """The slot's master now, refreshing and waiting while none is known."""
        router = self._router
        while True:
            transport = router.owner(self.slot)
            if transport is not None:
                return transport
            router.refresh()
            patience.sleep(f"no master serves slot {self.slot}")

    def settle(self, redirect: tuple[str, str], patience: _Patience) -> None:
        """React to a redirection (or a failed connect) before trying again."""
        self._router.settle([(self.slot, redirect)], patience)

    def _retrying(self, patience: _Patience, send: Callable[[Transport], T]) -> T:
        """``send`` to the owner until it connects, refreshing the map on failures; the
        waits come out of the operation's own ``patience``.

        ``send`` raises a redis-py connection error only when nothing was sent (our
        transport turns errors after sending into ConnectionLost), so it is safe to retry.
        """
        while True:
            transport = self.owner(patience)
            try:
                return send(transport)
            except ConnectionLost:
                raise
            except _CONNECT_ERRORS as exc:
                self._router.refresh(force=True)
                patience.sleep(f"cannot connect to the master of slot {self.slot}: {exc}")

    # ------------------------------------------------------------------ Transport's API

    def run_many(
        self, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes] = ()
    ) -> list[Any]:
        """:meth:`Transport.run_many` on the slot's master: commands that were redirected
        (and so did not run) are sent again, in order, until each has a real reply.

        If the slot stays unavailable, :class:`ClusterUnavailable` is raised when no script
        ran; when some did run (the slot started to move between two of them),
        the ones that did not get a ClusterUnavailable *value* in their place instead."""
        what = "+".join(script.name for script, _ in calls) or "command"
        patience = _Patience(self._router.retry_s, what)
        replies: list[Any] = [None] * (len(calls) + len(extra))
        todo = list(range(len(replies)))
        resend_safe = routing.resend_safe(script.name for script, _ in calls)
        while todo:
            try:
                todo = self._send_round(calls, extra, todo, replies, patience, resend_safe)
            except ClusterUnavailable as exc:
                if all(i in todo for i in range(len(calls))):
                    raise  # no script ran (a wake in ``extra`` changes no state)
                for i in todo:
                    replies[i] = exc
                break
        return replies

    def _send_round(
        self,
        calls: Sequence[tuple[Script, bytes]],
        extra: Sequence[bytes],
        todo: list[int],
        replies: list[Any],
        patience: _Patience,
        resend_safe: bool,
    ) -> list[int]:
        """Send the commands ``todo`` indexes once; fill in their replies; return those
        to send again."""
        sub_calls = [calls[i] for i in todo if i < len(calls)]
        sub_extra = [extra[i - len(calls)] for i in todo if i >= len(calls)]
        try:
            got = self._retrying(patience, lambda t: t.run_many(sub_calls, sub_extra))
        except ConnectionLost:
            if not resend_safe:
                raise
            self._router.refresh(force=True)
            patience.sleep(f"connection lost to the master of slot {self.slot}")
            return todo
        redirected, seen = routing.first_redirect(got)
        left = [todo[j] for j in redirected]  # they did not run: sent again
        for i, reply in zip(todo, got):
            if i not in left:
                replies[i] = reply
        if seen is not None:
            self.settle(seen, patience)
        return left

    def command(self, *args: bytes | str | int) -> Any:
        """One read on the slot's master; raises error replies (see :meth:`read_encoded`)."""
        reply = self.read_encoded(self._router._core.encode_command(args), str(args[0]))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def read_encoded(self, data: bytes, what: str) -> Any:
        """One encoded read on the slot's master; its reply, an error reply as a value.
        Follows ``MOVED`` and ``ASK`` (during a migration a key missing at the source has
        moved to the target), and, being a read, is simply sent again after a lost
        connection."""
        router = self._router
        patience = _Patience(router.retry_s, what)
        asking: Optional[Transport] = None
        while True:
            target = asking
            asking = None

            def send(owner: Transport) -> Any:
                if target is None:
                    return owner.roundtrip(data, 1, what)[0]
                return target.roundtrip(_ASKING + data, 2, what)[1]

            try:
                reply = self._retrying(patience, send)
            except ConnectionLost:
                router.refresh(force=True)
                patience.sleep(f"connection lost to the master of slot {self.slot}")
                continue
            redirect = redirect_of(reply)
            if redirect is None:
                return reply
            kind, address = redirect
            if kind == "ASK" and address:
                asking = router.at_address(address)
                if asking is not None:
                    continue
            self.settle(redirect, patience)

    def owner_transport(self) -> Transport:
        """The slot's master now (for streams, which handle redirections themselves)."""
        return self.owner(_Patience(self._router.retry_s, "stream"))
