"""The idle consumer's ear: key tracking (or the wake channel) on a connection of its own.

With key tracking the server tells this connection of every write to the keys that make a
job reservable or move the consumer's timers (:mod:`omniq_fast._protocol.idle` says which
and what each means), whoever wrote them: jobs from every SDK wake the consumer, and the
reserve poll becomes a rare safety net. Without tracking (a server before Redis 6, a
``CLIENT`` command refused by an ACL or renamed) it subscribes to the queue's wake channel,
which omniq-fast producers notify, and the consumer polls as it always did; that is logged
once.

The listener's thread sets the connection up (again after a failure), pings it and reads it
while the dispatcher is busy; while the dispatcher waits, it borrows the connection
(:meth:`WakeListener.listen`) and reads it itself, so a message is acted on without a thread
hand-off. One of the two reads the connection at a time.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Optional

from .keys import queue_anchor, wake_channel
from ._outage import Backoff, Outage
from ._protocol.idle import IDLE_POLL_S, Change, change_of, tracking_command

if TYPE_CHECKING:
    from ._cluster import ClusterRouter

__all__ = ["WakeListener"]

log = logging.getLogger("omniq_fast.consumer")

#: How long one read waits for a message. Waiting sends nothing to the server; it only
#: bounds how long a consumer's stop waits for this thread.
_READ_S = 0.1
#: A PING this often finds a connection that died without a word (tracking sends nothing
#: while nothing changes); no reply within this long after it drops the connection.
_PING_S = IDLE_POLL_S
#: How often, on a cluster, the listener checks that its node still owns the queue's slot
#: (a failover or a resharding the dispatcher learnt of through MOVED): no command is sent.
_OWNER_CHECK_S = 0.5
_INVALIDATE = b"__redis__:invalidate"
_READ_SIZE = 1 << 16


class _Gone(Exception):
    """The listener's connection must be set up again (the slot moved, no PING reply)."""


class _Ended(_Gone):
    """The server ended the subscription: the slot moved; the router's map is stale."""


class WakeListener:
    """Wakes the dispatcher when a job may have become reservable, and tells it when the
    server's next due times moved.

    Uses its own connection (taken from redis-py's settings for the node, so URL, AUTH,
    TLS and database are the client's, in RESP2), read raw with our reply parser. On a
    cluster it listens at the queue's own master (tracking is per node; sharded
    ``SSUBSCRIBE`` where the server has it) and sets up again when that node goes away,
    ends the subscription, or is no longer the slot's owner in the router's map.
    """

    def __init__(
        self,
        queue: str,
        wake_up: Callable[[], None],
        find_router: Callable[[], Optional[ClusterRouter]],
        standalone: Callable[[], Any],
        *,
        core: ModuleType,
        armed: Optional[Callable[[bool], None]] = None,
        changed: Optional[Callable[[Change], None]] = None,
        track: bool = True,
        nudge: Optional[Callable[[], None]] = None,
    ) -> None:
        """``wake_up()`` is called on each wake message and after each (re)connect;
        ``changed(change)`` on each invalidation (default: ``wake_up`` if a job may be
        reservable); ``armed(tracking)`` whenever tracking starts (True) or is lost or
        unavailable (False); ``find_router()`` is the cluster router or None (it may ask
        the server); ``standalone()`` is the one server's redis-py client. ``nudge()``
        ends the dispatcher's wait (without a reserve) after :meth:`listen` declined to
        lend the connection, so that its next wait borrows it again.

        These callbacks run on the listener's thread, or on the dispatcher's own inside
        :meth:`listen`."""
        self._queue = queue
        self._wake_up = wake_up
        self._armed = armed
        self._changed = changed
        self._find_router = find_router
        self._standalone = standalone
        self._core = core
        self._track = track
        self._channel = wake_channel(queue)
        self._anchor = queue_anchor(queue)
        self._router: Optional[ClusterRouter] = None
        self._owner: Any = None  # the cluster node's transport we listen at
        self._sharded = False
        self._closed = threading.Event()
        self._conn: Any = None
        self._parser: Any = None
        self._tracking = False
        self._told_untracked = False
        self._known = False  # whether the client is a cluster is known (needs the server)
        self._backoff = Backoff(0.05, 2.0)
        self._outage = Outage(log, f"wake channel {self._channel}")
        self._nudge = nudge
        # Lending the connection to the dispatcher. Guarded by _lending: the thread reads
        # only while not _lent and not _held; a lend waits for the thread's turn in
        # progress (_turning) to end, cutting its read short through the _interrupt socket.
        self._lending = threading.Condition()
        self._lendable = False  # set up, no fault pending
        self._lent = False
        self._held = 0.0  # the dispatcher may listen again soon: the thread waits till then
        self._turning = False
        self._declined = False  # a lend was refused: nudge once the thread has turned
        self._fault: Optional[BaseException] = None  # what the borrower's read ran into
        self._interrupted, self._interrupt = socket.socketpair()
        self._interrupted.setblocking(False)
        self._interrupt.setblocking(False)
        # The thread's duties: PING (and its reply's deadline), the cluster owner check.
        self._ping_due = self._pong_due = self._check_due = 0.0
        self._thread = threading.Thread(target=self._run, name="omniq-wake", daemon=True)
        self._thread.start()

    @property
    def tracking(self) -> bool:
        """Whether the server is telling us of every write to the queue's keys."""
        return self._tracking

    # ------------------------------------------------------------------ connection

    def _connect(self) -> None:
        self._drop()
        if self._router is None:
            client = self._standalone()
        else:
            self._owner = self._router.route(self._anchor).owner_transport()
            client = self._owner.redis
        pool = client.connection_pool
        # A connection of our own, not the pool's (it is never given back); RESP2 so the
        # invalidations arrive as pub/sub messages our parser reads like any reply.
        conn = pool.connection_class(**{**pool.connection_kwargs, "protocol": 2})
        conn.connect()
        self._conn, self._parser = conn, self._core.ReplyParser()
        tracking = self._track and self._arm_tracking()
        if tracking:
            self._call(("SUBSCRIBE", _INVALIDATE))
        else:
            self._call(("SSUBSCRIBE" if self._sharded else "SUBSCRIBE", self._channel))
        self._tracking = tracking
        log.debug("listening on %s at %s (tracking: %s)", self._queue, conn, tracking)

    def _arm_tracking(self) -> bool:
        """Turn tracking on for this connection, redirected to itself; False (said once in
        the log) if the server will not."""
        reply = self._call(("CLIENT", "ID"))
        if not isinstance(reply, Exception):
            reply = self._call(tracking_command(int(reply), self._queue))
        if not isinstance(reply, Exception):
            return True
        if not self._told_untracked:
            self._told_untracked = True
            log.warning(
                "key tracking is not available on the server of queue %s (%s): jobs from "
                "producers other than omniq-fast are found by polling", self._queue, reply,
            )  # fmt: skip
        return False

    def _call(self, args: tuple[Any, ...]) -> Any:
        """One command during setup; an error reply is returned (as an exception)."""
        self._send(args)
        deadline = time.monotonic() + 10.0
        while True:
            for reply in self._read(max(0.0, deadline - time.monotonic())):
                return reply
            if time.monotonic() >= deadline:
                raise TimeoutError("no reply from the server while setting up the listener")

    def _send(self, args: tuple[Any, ...]) -> None:
        self._conn._sock.sendall(self._core.encode_command(args))

    def _read(self, timeout: float, *, also: Optional[socket.socket] = None) -> list[Any]:
        """The replies and messages that arrive within ``timeout`` (at least one read's
        worth once anything arrived); nothing once ``also`` is readable first."""
        parser, sock = self._parser, self._conn._sock
        watched = (sock,) if also is None else (sock, also)
        replies: list[Any] = []
        while True:
            reply = parser.gets()
            if reply is not False:
                replies.append(reply)
                continue
            if replies:
                return replies
            buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not buffered:
                readable, _, _ = select.select(watched, (), (), timeout)
                if sock not in readable:
                    return replies
            chunk = sock.recv(_READ_SIZE)
            if not chunk:
                raise ConnectionError("server closed the listener's connection")
            parser.feed(chunk)

    def _drop(self) -> None:
        with self._lending:
            self._lendable = False
            self._lending.notify_all()  # a lend waiting for this turn gives up
        conn, self._conn = self._conn, None
        if self._tracking:
            self._tracking = False
            if self._armed is not None:
                self._armed(False)
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:
                pass

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        refresh = moved = False
        while True:
            with self._lending:
                # Handing the connection back is not announced (waking this thread would
                # take the interpreter from the dispatcher just as it reserves): this
                # thread looks again every _READ_S, and reads once the dispatcher stayed
                # away for that long (a handler runs, or the waits are short).
                while not self._closed.is_set() and (
                    self._lent or time.monotonic() < self._held
                ):
                    self._lending.wait(_READ_S)
                if self._closed.is_set():
                    return
                self._turning = True
            try:
                self._turn(refresh, moved)
                refresh = moved = False
            except Exception as exc:  # any failure: this thread must never die
                # Polling finds the jobs meanwhile; set up again after a backoff.
                if isinstance(exc, _Gone):
                    log.debug("%s: %s; listening again", self._channel, exc)
                else:
                    self._outage.failed(exc)
                self._drop()
                refresh, moved = True, isinstance(exc, _Ended)
                if not isinstance(exc, _Gone) and self._closed.wait(self._backoff.delay()):
                    return
            finally:
                with self._lending:
                    self._turning = False
                    self._lendable = self._conn is not None and self._fault is None
                    nudge = self._declined and self._lendable
                    if nudge:
                        self._declined = False
                    self._lending.notify_all()
                if nudge and self._nudge is not None:
                    self._nudge()

    def _turn(self, refresh: bool, moved: bool) -> None:
        """One turn of the thread: set up if needed, do the duties, read for a while."""
        fault, self._fault = self._fault, None
        if fault is not None:
            raise fault  # what the dispatcher's read ran into, handled here
        if not self._known:
            self._router = self._find_router()
            self._sharded = self._router is not None and self._router.sharded_pubsub
            self._known = True
        if refresh and self._router is not None:
            self._router.refresh(force=moved)
        if self._conn is None:
            self._connect()
            self._backoff.reset()
            self._outage.recovered()
            now = time.monotonic()
            self._ping_due, self._pong_due = now + _PING_S, 0.0
            self._check_due = now + _OWNER_CHECK_S
            if self._armed is not None:
                self._armed(self._tracking)
            # Jobs queued while we were not listening: look once now.
            self._wake_up()
        self._duties(time.monotonic())
        messages = self._read(_READ_S, also=self._interrupted)
        self._quiet_interrupt()
        self._heard(messages)

    def _duties(self, now: float) -> None:
        """PING when due, and give up on a connection that did not answer the last one or
        whose node no longer owns the queue's slot (raises :class:`_Gone`)."""
        if self._pong_due and now > self._pong_due:
            raise _Gone("no reply to PING")
        if now >= self._ping_due:
            self._send(("PING",))
            self._ping_due = self._pong_due = now + _PING_S
        if self._router is not None and now >= self._check_due:
            self._check_due = now + _OWNER_CHECK_S
            if self._router.route(self._anchor).owner_transport() is not self._owner:
                raise _Gone("the queue's slot moved to another node")

    def _duties_at(self) -> float:
        """When :meth:`_duties` next has something to do."""
        at = min(self._ping_due, self._pong_due) if self._pong_due else self._ping_due
        return min(at, self._check_due) if self._router is not None else at

    def _heard(self, messages: list[Any]) -> None:
        if messages:
            self._pong_due = 0.0  # anything from the server: the connection lives
        for message in messages:
            self._message(message)

    def _message(self, message: Any) -> None:
        if not isinstance(message, list) or len(message) < 3:
            return
        kind = message[0]
        if kind == b"message" and message[1] == _INVALIDATE:
            change = change_of(self._queue, message[2])
            if self._changed is not None:
                self._changed(change)
            elif change.reservable:
                self._wake_up()
        elif kind in (b"message", b"smessage"):
            self._wake_up()
        elif kind in (b"sunsubscribe", b"unsubscribe"):
            # The server dropped us: the slot moved. Listen where it lives now.
            raise _Ended("the server ended the subscription")

    def _ring(self) -> None:
        """Cut the thread's read short."""
        try:
            self._interrupt.send(b"\0")
        except OSError:
            pass  # bytes already waiting, or closed

    def _quiet_interrupt(self) -> None:
        try:
            while self._interrupted.recv(4096):
                pass
        except OSError:
            pass

    # ------------------------------------------------------------------ lending

    def listen(self, wakeup: socket.socket, timeout: float) -> bool:
        """Read the connection on the caller's thread (the dispatcher's) for up to
        ``timeout`` or until ``wakeup`` is readable, acting on each message as the thread
        would; False at once if it is not set up (the thread then nudges the caller once
        it is). Waits for the thread to leave the connection first (its read is cut short).
        Duties fall due meanwhile: the wait ends early for them, and they are done here."""
        with self._lending:
            if not self._lendable or self._closed.is_set():
                self._declined = True
                return False
            self._lent = True
            if self._turning:
                self._ring()
                # Not past a failure: that turn sets up again (and backs off) first.
                while self._turning and self._lendable:
                    self._lending.wait()
            lendable = self._lendable
            if not lendable:
                self._lent, self._declined = False, True
                self._lending.notify_all()
                return False
        try:
            self._listen(wakeup, timeout)
        finally:
            with self._lending:
                self._lent = False
                if self._fault is None:
                    self._held = time.monotonic() + _READ_S
                else:
                    self._held = 0.0
                    self._lending.notify_all()  # set up again at once
        return True

    def _listen(self, wakeup: socket.socket, timeout: float) -> None:
        try:
            now = time.monotonic()
            self._duties(now)
            wait = max(0.0, min(timeout, self._duties_at() - now))
            self._heard(self._read(wait, also=wakeup))
        except Exception as exc:
            # The thread sets up again (and logs); the dispatcher must not stall on it.
            with self._lending:
                self._fault, self._lendable = exc, False

    def close(self) -> None:
        """Stop listening; returns once the thread's read is cut short (or within
        ``_READ_S`` should it be setting up)."""
        self._closed.set()
        with self._lending:
            self._lending.notify_all()
        self._ring()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._drop()
        self._interrupt.close()
        self._interrupted.close()
