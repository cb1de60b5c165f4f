"""One asyncio connection to one server, pipelined automatically.

Every task's request appends its encoded commands to a write buffer and a future to a FIFO
of pending replies; one flush per event-loop turn writes the whole buffer at once, and one
reader task parses the replies (with the core's ``ReplyParser``) and resolves the futures in
order. So a thousand tasks awaiting one call each cost a few writes and reads, not a
thousand round trips. A request's commands (a call and its wake message; a SCRIPT LOAD and
the re-sent call) stay contiguous in the buffer and resolve together.

redis-py sets the connection up (URL, AUTH/ACL, database, TLS, timeouts); we take its
stream reader and writer. When the connection fails (reset, EOF, an unreadable reply, the
socket timeout), exactly the requests written on it fail, with ``ConnectionLost`` (their
effect is unknown); requests still in the buffer were not sent and go on a fresh
connection. Error replies are values (``ReplyError``), never raised here.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from types import ModuleType
from typing import Any, Optional

import redis.asyncio as aredis

from ..errors import ProtocolError
from .._transport import connect_error, lost

__all__ = ["Connection", "NotSent"]

_READ_SIZE = 1 << 16
#: Buffered bytes that are written at once rather than at the end of the loop turn, so the
#: server starts on the first calls while the tasks of a large burst are still encoding.
_EARLY_FLUSH = 1 << 15

if sys.version_info >= (3, 11):
    _timeout = asyncio.timeout
else:  # pragma: no cover - Python 3.10
    _timeout = None


class NotSent(Exception):
    """The connection failed before this request was written: nothing of it ran."""


class _Request:
    """Commands sent together: how many replies they get and the future waiting for them."""

    __slots__ = ("future", "count", "replies", "what")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, what: str) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.what = what


class _Link:
    """One open socket: its buffer of unwritten requests and FIFO of written ones."""

    def __init__(self, owner: Connection, conn: Any, parser: Any) -> None:
        self.owner = owner
        self.conn = conn
        # redis-py keeps the streams on private attributes; they are the ones it uses.
        self.reader: asyncio.StreamReader = conn._reader
        self.writer: asyncio.StreamWriter = conn._writer
        self.timeout: Optional[float] = conn.socket_timeout
        self.parser = parser
        self.loop = asyncio.get_running_loop()
        self.buffer: list[bytes] = []
        self.buffered = 0  # bytes in buffer
        self.unwritten: list[_Request] = []
        self.pending: deque[_Request] = deque()
        self.flush_scheduled = False
        self.reading: Optional[asyncio.Task[None]] = None
        self.dead = False

    def submit(self, data: bytes, count: int, what: str) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        self.buffer.append(data)
        self.buffered += len(data)
        self.unwritten.append(_Request(future, count, what))
        if self.buffered >= _EARLY_FLUSH:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        return future

    def flush(self) -> None:
        """Write everything submitted this loop turn at once, then hand it to the reader."""
        self.flush_scheduled = False
        if self.dead or not self.buffer:
            return
        if self.writer.transport.is_closing() or self.reader.at_eof():
            # The server closed the socket while it sat idle (a timeout, CLIENT KILL): none
            # of these bytes can reach it, so they go on a fresh connection instead.
            self.fail(ConnectionError("the server closed the idle connection"))
            return
        data = b"".join(self.buffer)
        requests = self.unwritten
        self.buffer, self.unwritten, self.buffered = [], [], 0
        # In the FIFO before writing: once write is called, part of it may be on the wire.
        self.pending.extend(requests)
        try:
            self.writer.write(data)
        except Exception as exc:
            self.fail(exc)
            return
        if self.reading is None:
            self.reading = self.loop.create_task(self.read())

    async def read(self) -> None:
        """Parse replies and resolve requests in order while any are waiting."""
        parser, pending = self.parser, self.pending
        try:
            while pending:
                reply = parser.gets()
                if reply is False:
                    chunk = await self._read_chunk()
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    parser.feed(chunk)
                    continue
                head = pending[0]
                head.replies.append(reply)
                if len(head.replies) == head.count:
                    pending.popleft()
                    if not head.future.done():  # a cancelled caller's replies are still read
                        head.future.set_result(head.replies)
        except asyncio.CancelledError:
            self.fail(ConnectionError("connection closed by the client"))
            raise
        except BaseException as exc:
            self.fail(exc)
        finally:
            self.reading = None

    async def _read_chunk(self) -> bytes:
        # The socket timeout bounds each wait for reply bytes, as on the blocking side.
        if self.timeout is None:
            return await self.reader.read(_READ_SIZE)
        if _timeout is not None:
            async with _timeout(self.timeout):
                return await self.reader.read(_READ_SIZE)
        return await asyncio.wait_for(self.reader.read(_READ_SIZE), self.timeout)

    def fail(self, exc: BaseException) -> None:
        """The socket is unusable: requests written on it fail as lost (their effect is
        unknown), those not written yet are handed back to be sent on a fresh one."""
        if self.dead:
            return
        self.dead = True
        if isinstance(exc, asyncio.TimeoutError):
            exc = TimeoutError(f"no reply within {self.timeout} s")
        elif not isinstance(exc, (OSError, ProtocolError, TimeoutError)):
            exc = ProtocolError(f"{type(exc).__name__}: {exc}")
        for request in self.pending:
            if not request.future.done():
                request.future.set_exception(lost(request.what, exc))
        for request in self.unwritten:
            if not request.future.done():
                request.future.set_exception(NotSent())
        self.pending.clear()
        self.unwritten, self.buffer = [], []
        self.owner._forget(self)
        # The socket's state is unknown: closed before the pool sees it again.
        self.loop.create_task(self.owner._discard(self.conn))
        transport = self.writer.transport
        if transport is not None:
            transport.abort()
        if self.reading is not None and self.reading is not asyncio.current_task():
            self.reading.cancel()

    async def close(self) -> None:
        if not self.dead:
            self.dead = True
            for request in [*self.pending, *self.unwritten]:
                if not request.future.done():
                    request.future.set_exception(lost(request.what, ConnectionError("closed")))
            self.owner._forget(self)
            if self.reading is not None:
                self.reading.cancel()
        await self.owner._discard(self.conn)


class Connection:
    """The pipelined connection to the server of ``client`` (a ``redis.asyncio.Redis``)."""

    def __init__(self, client: aredis.Redis, core: ModuleType) -> None:
        self.redis = client
        self._pool: Any = client.connection_pool  # redis-py's asyncio pool is untyped
        self._core = core
        self._link: Optional[_Link] = None
        self._taken: list[Any] = []  # pooled connections we hold (released on close)
        self._lock: Optional[asyncio.Lock] = None

    async def request(self, data: bytes, count: int, what: str) -> list[Any]:
        """Send ``count`` encoded commands together; their replies, in order, error replies
        as values. Raises ``ConnectionLost`` (``ServerTimeout``) when the connection failed
        after they were written, typed connect errors when none could be opened."""
        while True:
            link = self._link
            if link is None or link.dead:
                link = await self.link()
            try:
                return await link.submit(data, count, what)
            except NotSent:
                continue  # nothing of it reached the server: a fresh connection takes it

    def submit_now(self, data: bytes, count: int, what: str) -> Optional[asyncio.Future[list[Any]]]:
        """:meth:`request` written at once (with what the loop turn buffered before it) on
        the open socket, without awaiting anything: the future of its replies (``NotSent``
        when the socket failed before writing it), or None when no socket is open (use
        :meth:`request`, which connects)."""
        link = self._link
        if link is None or link.dead:
            return None
        future = link.submit(data, count, what)
        link.flush()
        return future

    async def link(self) -> _Link:
        """The open socket, connecting first when there is none (typed connect errors:
        nothing was sent). Its ``submit`` queues a request without awaiting the reply."""
        link = self._link
        if link is not None and not link.dead:
            return link
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            link = self._link
            if link is not None and not link.dead:
                return link
            try:
                conn = await self._pool.get_connection()
            except Exception as exc:
                raise connect_error(exc) from exc
            self._taken.append(conn)
            try:
                await conn.connect()  # no-op when connected; nothing of ours was sent yet
                link = _Link(self, conn, self._core.ReplyParser())
            except Exception as exc:
                await self._release(conn)
                raise connect_error(exc) from exc
            self._link = link
            return link

    def _forget(self, link: _Link) -> None:
        if self._link is link:
            self._link = None

    async def _discard(self, conn: Any) -> None:
        try:
            await conn.disconnect()
        finally:
            await self._release(conn)

    async def _release(self, conn: Any) -> None:
        if conn in self._taken:
            self._taken.remove(conn)
            await self._pool.release(conn)

    async def close(self) -> None:
        """Fail what is in flight and give the connection back to the pool."""
        link = self._link
        if link is not None:
            await link.close()
        for conn in list(self._taken):
            await self._release(conn)
