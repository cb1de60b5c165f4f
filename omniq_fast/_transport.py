"""Writes encoded commands straight to a redis-py connection's socket and parses the replies.

redis-py sets the connection up (URL, AUTH/ACL, db, TLS, timeouts, RESP version); we take it
from the pool, write bytes our core encoded, read in large chunks and parse with our
``ReplyParser``. One write per batch of commands, one read loop for all their replies.

Retries are ours, not redis-py's: a script whose reply was lost may already have run, so
only reads are retried after a connection error.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import weakref
from collections import deque
from types import ModuleType
from typing import Any, Generic, Iterable, Iterator, Optional, Sequence, TypeVar

import redis
from redis.exceptions import AuthenticationError, AuthenticationWrongNumberOfArgsError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import (
    AuthenticationFailed,
    ConnectionLost,
    InvalidArgument,
    OmniqError,
    ProtocolError,
    ReplyError,
    ServerTimeout,
    ServerUnreachable,
    reply_error,
)
from ._protocol.noscript import MAX_NOSCRIPT_RETRIES, resend
from ._protocol.noscript import is_noscript as _is_noscript
from ._scripts import Script

__all__ = ["Transport", "Batch", "Pending", "connect_error", "MAX_NOSCRIPT_RETRIES", "KEEP_MAX"]

_NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

_READ_SIZE = 1 << 16
# A socket's descriptor takes os.write on POSIX only (on Windows a socket is no CRT file),
# and select.poll is POSIX only too: elsewhere the wire uses sendall and select. Bound at
# import: a later monkey-patching (gevent drops select.poll) must not break a peek, which
# never blocks anyway.
_new_poll = getattr(select, "poll", None)
_POSIX = os.name == "posix" and _new_poll is not None
_EXHAUSTED = StopIteration()  # marks a source that simply ran out

T = TypeVar("T")


class Batch(Generic[T]):
    """Encoded commands sent in one write, their reply count, and a caller's tag."""

    __slots__ = ("data", "count", "tag")

    def __init__(self, data: bytes, count: int, tag: T) -> None:
        self.data = data
        self.count = count
        self.tag = tag




def connect_error(exc: BaseException) -> BaseException:
    """The typed error for a failure to set a connection up (nothing was sent yet):
    :class:`AuthenticationFailed` for refused credentials, :class:`InvalidArgument` for a
    database the server refuses (with the server's own words), :class:`ServerUnreachable`
    for the network, a typed :class:`ReplyError` for any other refusal. Anything else (our
    own errors included) is returned as it is."""
    if isinstance(exc, OmniqError):
        return exc
    message = str(exc)
    if isinstance(exc, (AuthenticationError, AuthenticationWrongNumberOfArgsError)) or (
        isinstance(exc, ResponseError) and message.startswith(("NOAUTH", "WRONGPASS"))
    ):
        return AuthenticationFailed(f"the server refused the credentials: {message}")
    if isinstance(exc, ResponseError):
        if "DB index" in message or "SELECT" in message:
            return InvalidArgument(f"the server refused the URL's database: {message}")
        return reply_error(message)
    if isinstance(exc, RedisTimeoutError):
        return ServerUnreachable(f"connecting to the server timed out: {message}")
    if isinstance(exc, (RedisConnectionError, OSError)):
        return ServerUnreachable(f"cannot connect to the server: {message}")
    if isinstance(exc, RedisError):
        return ProtocolError(f"connection setup failed: {message}")
    return exc


def lost(what: str, exc: BaseException, unknown: Optional[list[Any]] = None) -> ConnectionLost:
    """The error for a connection that failed after ``what`` was sent: its effect is
    unknown. A socket timeout (a frozen or overloaded server) is :class:`ServerTimeout`."""
    if isinstance(exc, (RedisTimeoutError, socket.timeout, TimeoutError)):
        return ServerTimeout(
            f"no reply to {what} within the socket timeout; its effect on the server is "
            f"unknown: {exc}",
            unknown,
        )
    if isinstance(exc, ProtocolError):
        return ConnectionLost(
            f"unreadable reply to {what} (connection closed); its effect on the server is "
            f"unknown: {exc}",
            unknown,
        )
    return ConnectionLost(
        f"connection lost during {what}; its effect on the server is unknown: {exc}", unknown
    )


class _Wire:
    """A pooled connection used raw while it is out of the pool (for one call, or kept
    between calls): our encoder writes, our parser reads."""

    __slots__ = ("conn", "sock", "parser", "raw", "peek", "peek_fd", "generation")

    def __init__(self, conn: Any, parser: Any, generation: int) -> None:
        conn.connect()  # no-op when connected; errors here mean nothing was sent
        self.conn = conn
        self.generation = generation  # the transport's when checked out of the pool
        # redis-py keeps the socket on a private attribute; it is the one it writes to.
        self.sock: socket.socket = conn._sock
        self.parser = parser
        # A plain socket is written with os.write on its descriptor (not TLS, whose bytes
        # go through the SSL object). A socket with a timeout makes Python poll for room
        # before every send: one system call more per command than the write itself, when
        # a small command almost always fits the socket's buffer at once.
        self.raw = _POSIX and not isinstance(self.sock, ssl.SSLSocket)
        self.peek: Optional[Any] = None  # closed_by_peer's poll object, made on first use
        self.peek_fd = -1

    def send(self, data: bytes) -> None:
        # The descriptor is asked for each time, never kept: a socket closed under us
        # (the pool disconnected) answers -1, while a kept number may name another file.
        fd = self.sock.fileno() if self.raw else -1
        if fd >= 0:
            try:
                # Non-blocking when the socket has a timeout: a full buffer takes part (or
                # nothing) and sendall sends the rest, waiting at most the timeout as
                # before. Without a timeout it blocks, as sendall would.
                sent = os.write(fd, data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self.sock.sendall(data)

    def closed_by_peer(self) -> bool:
        """Whether the server closed (or wrote unasked to) this idle connection: a peek
        that does not block. Checked before reusing a kept wire, as redis-py's pool
        checks a connection before handing it out, so a call is not sent into a dead
        socket (its outcome would then be unknown although nothing ran)."""
        # poll, not a non-blocking recv: a socket with a timeout waits for input before
        # any recv, flags or not. One poll object per wire, not a select's descriptor
        # sets built on every call.
        fd = self.sock.fileno()
        if fd < 0:
            return True  # closed under us
        try:
            if not _POSIX or _new_poll is None:
                readable, _, broken = select.select((fd,), (), (fd,), 0)
                return bool(readable or broken)
            if fd != self.peek_fd or self.peek is None:
                self.peek = _new_poll()
                self.peek.register(fd, select.POLLIN | select.POLLPRI)
                self.peek_fd = fd
            # End of stream, unasked-for bytes, or an error (POLLHUP, POLLERR, POLLNVAL
            # are reported whatever was asked for).
            return bool(self.peek.poll(0))
        except (OSError, ValueError):
            return True

    def replied(self) -> bool:
        """Whether bytes (or the end of the stream) wait to be read: on a wire with
        replies due, the same peek as :meth:`closed_by_peer` says they have begun to come."""
        return self.closed_by_peer()

    def read(self, count: int) -> list[Any]:
        parser, recv = self.parser, self.sock.recv
        replies: list[Any] = []
        while len(replies) < count:
            reply = parser.gets()
            if reply is False:
                chunk = recv(_READ_SIZE)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                parser.feed(chunk)
                continue
            replies.append(reply)
        return replies


def _give_back(pool: Any, idle: list[_Wire]) -> None:
    while idle:
        try:
            pool.release(idle.pop().conn)
        except IndexError:  # another thread took the last one
            break
        except Exception:  # the pool is gone or closed: nothing is left to give back to
            pass


class _Line:
    """A wire held for calls written ahead of their reads (:class:`Pending`), read in the
    order written; given back once the last is read, closed if any read fails."""

    __slots__ = ("transport", "wire", "unread")

    def __init__(self, transport: "Transport", wire: _Wire) -> None:
        self.transport = transport
        self.wire: Optional[_Wire] = wire
        self.unread: deque[Pending] = deque()

    def close(self) -> None:
        wire, self.wire = self.wire, None
        if wire is not None:
            self.transport._checkin(wire, False)


class Pending:
    """Script calls written and not read yet (:meth:`Transport.send_many`): the caller does
    other work meanwhile, then reads. Its connection is held until read (or abandoned), so
    no other caller's replies cross with its own; calls written after it on the same
    connection (``after=``) are read after it."""

    __slots__ = ("_line", "_calls", "_what")

    def __init__(self, line: _Line, calls: Sequence[tuple[Script, bytes]], what: str) -> None:
        self._line, self._calls, self._what = line, calls, what

    def answered(self) -> bool:
        """Whether :meth:`result` would not wait for the server: a peek, no read."""
        line = self._line
        if line.wire is None:
            return True  # the connection failed: result() raises at once
        return line.unread[0] is self and line.wire.replied()

    def result(self) -> list[Any]:
        """Every reply, in order, error replies as values (NOSCRIPT ones re-run, as
        :meth:`Transport.run_many` does); :class:`ConnectionLost` as for a round trip,
        also when the connection failed under calls written before these."""
        line = self._line
        assert line.unread and line.unread[0] is self, "read in the order written"
        line.unread.popleft()
        wire, transport, calls = line.wire, line.transport, self._calls
        if wire is None:
            raise lost(self._what, ConnectionError("the connection failed under earlier calls"))
        try:
            replies = wire.read(len(calls))
        except (*_NETWORK_ERRORS, ProtocolError) as exc:
            line.close()
            raise lost(self._what, exc) from exc
        except BaseException:
            line.close()
            raise
        if not line.unread:
            line.wire = None
            transport._checkin(wire, True)
        transport._resend_noscript(calls, replies, self._what)
        return replies

    def abandon(self) -> None:
        """Never read the replies: the connection is closed (its state is unknown)."""
        line = self._line
        if self in line.unread:
            line.unread.remove(self)
        line.close()


#: Every live transport, so that a forked child forgets their kept connections.
_TRANSPORTS: "weakref.WeakSet[Transport]" = weakref.WeakSet()


def _forget_kept_in_child() -> None:
    """After a fork, in the child: no transport may use the parent's kept sockets (the
    parent still owns them); each starts afresh, as redis-py's pool does. A hook run once
    per fork rather than a getpid per call (a system call on every publish)."""
    for transport in list(_TRANSPORTS):
        transport._idle.clear()


if hasattr(os, "register_at_fork"):  # POSIX; a platform without fork needs no hook
    os.register_at_fork(after_in_child=_forget_kept_in_child)

#: Most idle connections a transport keeps out of a pool it owns (one per thread that
#: calls at once, up to this; more concurrent calls check connections out of the pool).
KEEP_MAX = 32


class Transport:
    """Runs commands and scripts over one redis-py client's connection pool.

    Connections are kept out of the pool between calls, ready, up to ``keep`` of them
    (the last used on top): a call takes one with no pool checkout and no redis-py hooks
    (the single calls of a producer cost a fraction), and gives it back after; threads
    calling at once each take their own, so replies never cross. Past ``keep`` idle, a
    connection goes back to the pool. TLS connections always go through the pool (an SSL
    socket cannot peek).
    """

    def __init__(self, client: redis.Redis, core: ModuleType, keep: int = 1) -> None:
        self.redis = client
        self._pool = client.connection_pool
        self._core = core
        # A bounded pool keeps half its connections for callers of the redis-py client.
        bound = getattr(self._pool, "max_connections", None)
        self._keep = max(1, min(keep, bound // 2)) if isinstance(bound, int) else keep
        # Idle wires; list.pop and list.append are atomic, so no lock: a thread that finds
        # the list empty (or loses the race for its last wire) checks one out of the pool.
        self._idle: list[_Wire] = []
        # Bumped by release_held: a wire checked out before it is released at its checkin
        # instead of being kept.
        self._generation = 0
        _TRANSPORTS.add(self)
        # The kept connections go back to the pool when this transport is closed or
        # garbage-collected: a client made on a shared redis-py client (``redis=``) and
        # dropped without close() must not keep connections of that pool for ever.
        weakref.finalize(self, _give_back, self._pool, self._idle)

    # ------------------------------------------------------------------ checkout

    def _checkout(self) -> _Wire:
        """A connected wire; setting one up sends no command of ours, so its failures are
        raised typed by :func:`connect_error` (nothing ran)."""
        idle = self._idle
        while idle:
            try:
                wire = idle.pop()
            except IndexError:  # another thread took the last one
                break
            if not wire.closed_by_peer():
                return wire
            wire.conn.disconnect()
            self._pool.release(wire.conn)
        return self._pooled()

    def release_held(self) -> None:
        """Give the kept connections back to the pool; one a call is using goes back when
        that call ends."""
        self._generation += 1
        _give_back(self._pool, self._idle)

    def _pooled(self) -> _Wire:
        try:
            conn = self._pool.get_connection()
        except Exception as exc:
            raise connect_error(exc) from exc
        try:
            return _Wire(conn, self._core.ReplyParser(), self._generation)
        except Exception as exc:
            self._pool.release(conn)
            raise connect_error(exc) from exc
        except BaseException:
            self._pool.release(conn)
            raise

    def _checkin(self, wire: _Wire, healthy: bool) -> None:
        if not healthy:
            # Half-written commands or half-read replies: the connection's state is
            # unknown, so it is closed rather than handed to the next caller.
            wire.conn.disconnect()
        elif wire.raw and wire.generation == self._generation and len(self._idle) < self._keep:
            self._idle.append(wire)
            return
        self._pool.release(wire.conn)

    # ------------------------------------------------------------------ round trips

    def roundtrip(self, data: bytes, count: int, what: str) -> list[Any]:
        """Write ``count`` encoded commands at once and read their replies.

        Error replies come back as :class:`ReplyError` values, not raised, so one bad reply
        does not hide the others. A network error or an unreadable reply once sending has
        begun raises :class:`ConnectionLost` (:class:`ServerTimeout` for a socket timeout);
        one while connecting raises as :func:`connect_error` says, since nothing reached
        the server.
        """
        wire = self._checkout()
        healthy = False
        try:
            wire.send(data)
            replies = wire.read(count)
            healthy = True
            return replies
        except (*_NETWORK_ERRORS, ProtocolError) as exc:
            raise lost(what, exc) from exc
        finally:
            self._checkin(wire, healthy)

    def stream(
        self,
        batches: Iterable[Batch[T]],
        script: Script,
        window: int = 2,
    ) -> Iterator[tuple[T, list[Any]]]:
        """Send batches of EVALSHA ``script`` calls, keeping up to ``window`` in flight.

        While the server runs one batch, the next is already encoded and on its way, so
        neither side waits for the other. Yields each batch's tag with its replies, in
        order. NOSCRIPT replies (the script was flushed) are re-run in order after a
        SCRIPT LOAD, up to :data:`MAX_NOSCRIPT_RETRIES` times: a NOSCRIPT reply means that
        call did nothing. Other error replies are yielded like any reply: the consumer of
        the stream decides, and stops the source if it wants no more batches sent, while
        the batches in flight are still read and yielded.

        On a network error or an unreadable reply raises :class:`ConnectionLost` whose
        ``unknown`` holds the tags of the batches in flight (their effect is unknown);
        batches already yielded got their replies, and the rest were never sent.
        """
        wire = self._checkout()
        healthy = False
        in_flight: deque[Batch[T]] = deque()
        source = iter(batches)
        stopped: Optional[BaseException] = None  # the source's own error, raised last
        try:
            while True:
                while stopped is None and len(in_flight) < window:
                    try:
                        batch = next(source)
                    except StopIteration:
                        stopped = _EXHAUSTED
                        break
                    except Exception as exc:
                        # An item that failed to encode: what is in flight still gets its
                        # replies, so the caller knows exactly what was written.
                        stopped = exc
                        break
                    in_flight.append(batch)  # before sending: half a write is in flight too
                    wire.send(batch.data)
                if not in_flight:
                    break
                batch = in_flight[0]
                replies = wire.read(batch.count)
                if not any(_is_noscript(r) for r in replies):
                    in_flight.popleft()
                    yield batch.tag, replies
                    continue
                for batch, replies in self._rerun_noscript(wire, in_flight, replies, script):
                    in_flight.popleft()
                    yield batch.tag, replies
            healthy = True
        except (*_NETWORK_ERRORS, ProtocolError) as exc:
            raise lost(
                f"{script.name} ({len(in_flight)} batch(es) in flight)",
                exc,
                [b.tag for b in in_flight],
            ) from exc
        finally:
            self._checkin(wire, healthy)
        if stopped is not _EXHAUSTED and stopped is not None:
            raise stopped

    def _rerun_noscript(
        self, wire: _Wire, in_flight: deque[Batch[T]], head: list[Any], script: Script
    ) -> list[tuple[Batch[T], list[Any]]]:
        """The script was flushed: the head batch answered NOSCRIPT, and so did (most
        likely) every batch sent after it. Read those replies first, so the wire is in
        step, then, batch by batch in order, load the script and re-send each batch that
        did not run (a flush may land between the load and the re-send: bounded by
        :data:`MAX_NOSCRIPT_RETRIES`). Each batch is a single EVALSHA: a NOSCRIPT reply
        means it changed nothing. A batch still answering NOSCRIPT after the retries, or
        whose load was refused, keeps its NOSCRIPT reply (it did not run)."""
        answered = [(in_flight[0], head)]
        for batch in list(in_flight)[1:]:
            answered.append((batch, wire.read(batch.count)))
        load = self._core.encode_command((b"SCRIPT", b"LOAD", script.source))
        out = []
        for batch, replies in answered:
            tries = 0
            while any(_is_noscript(r) for r in replies) and tries < MAX_NOSCRIPT_RETRIES:
                tries += 1
                wire.send(load + batch.data)
                loaded, *again = wire.read(1 + batch.count)
                if isinstance(loaded, ReplyError):
                    # The EVALSHA sent after the failed load answered NOSCRIPT too.
                    replies = again
                    break
                replies = again
            out.append((batch, replies))
        return out

    # ------------------------------------------------------------------ single calls

    def command(self, *args: bytes | str | int) -> Any:
        """Run one idempotent command (a read), reconnecting once on a network error;
        raises error replies."""
        reply = self.read_encoded(self._core.encode_command(args), str(args[0]))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def read_encoded(self, data: bytes, what: str) -> Any:
        """One encoded read, sent again once after a network error (a second run of a
        read changes nothing); its reply, an error reply as a value."""
        try:
            return self.roundtrip(data, 1, what)[0]
        except (ConnectionLost, *_NETWORK_ERRORS):
            return self.roundtrip(data, 1, what)[0]

    def run_many(
        self, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes] = ()
    ) -> list[Any]:
        """Several encoded EVALSHAs (and ``extra`` encoded commands after them, e.g. a
        PUBLISH) in one round trip; returns every reply, in order, errors as values.

        Calls that answered NOSCRIPT changed nothing: their scripts are loaded and those
        calls re-sent, in order, in a second round trip.
        """
        data = b"".join(call for _, call in calls) + b"".join(extra)
        count = len(calls) + len(extra)
        what = "+".join(script.name for script, _ in calls)
        replies = self.roundtrip(data, count, what)
        self._resend_noscript(calls, replies, what, extra)
        return replies

    def send_many(
        self, calls: Sequence[tuple[Script, bytes]], after: Optional[Pending] = None
    ) -> Pending:
        """Several encoded EVALSHAs in one write, their replies read later from what this
        returns (:meth:`run_many` in two halves); ``after``: on the connection of calls
        written before and not read yet, to be read after them. A failed write raises
        :class:`ConnectionLost` (part of it may have reached the server)."""
        what = "+".join(script.name for script, _ in calls)
        if after is not None and after._line.wire is not None:
            line = after._line
        else:
            line = _Line(self, self._checkout())
        wire = line.wire
        assert wire is not None
        try:
            wire.send(b"".join(call for _, call in calls))
        except (*_NETWORK_ERRORS, ProtocolError) as exc:
            line.close()
            raise lost(what, exc) from exc
        except BaseException:
            line.close()
            raise
        pending = Pending(line, calls, what)
        line.unread.append(pending)
        return pending

    def run_one(self, script: Script, data: bytes, extra: bytes = b"") -> Any:
        """One encoded EVALSHA, and ``extra`` (one encoded command, e.g. a PUBLISH, or
        nothing) after it in the same write; the EVALSHA's reply, an error as a value.
        :meth:`run_many` for a single call, without the lists (a publish loop's path);
        ``extra``'s reply is read and dropped."""
        if extra:
            replies = self.roundtrip(data + extra, 2, script.name)
        else:
            replies = self.roundtrip(data, 1, script.name)
        if isinstance(replies[0], ReplyError):  # perhaps NOSCRIPT: the general path decides
            wakes = (extra,) if extra else ()
            self._resend_noscript(((script, data),), replies, script.name, wakes)
        return replies[0]

    def _resend_noscript(
        self,
        calls: Sequence[tuple[Script, bytes]],
        replies: list[Any],
        what: str,
        wakes: Sequence[bytes] = (),
    ) -> None:
        """Calls that answered NOSCRIPT changed nothing: load their scripts and send them
        again, in order, then ``wakes`` again, in one more round trip (a bounded number of
        times); their new replies replace the NOSCRIPT ones in ``replies``."""
        for _ in range(MAX_NOSCRIPT_RETRIES):
            again = resend(self._core, calls, replies, wakes)
            if again is None:
                break
            again.merge(replies, self.roundtrip(again.data, again.count, what))

    def close(self) -> None:
        self.release_held()
        self.redis.close()

