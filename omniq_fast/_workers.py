"""Where a consumer's handlers run when not inline: threads, or an event loop for async.

Every way a handler can end ends its job (see :func:`call_handler`): a return is a
success; any exception, ``BaseException`` included, is a failure with its text. A
``SystemExit``, ``KeyboardInterrupt`` or other ``BaseException`` that is not an
``Exception`` (``asyncio.CancelledError`` aside) also asks the consumer to stop: it is
handed back as ``fatal`` and re-raised by ``Consumer.run`` after a graceful stop.
"""

from __future__ import annotations

import asyncio
import inspect
import queue as queue_module
import threading
import time
from typing import Any, Awaitable, Callable, Optional

from ._context import JobCtx
from ._failures import failure_text

__all__ = ["Workers", "ThreadLoop", "call_handler", "call_async_handler", "is_fatal"]

#: ``received(ctx)``: may the handler start ``ctx`` (False: give it back unstarted)?
Received = Callable[[JobCtx], bool]
#: ``finished(ctx, error, seconds)``: the handler ended (``seconds < 0``: never started).
Finished = Callable[[JobCtx, Optional[str], float], None]
#: ``abort(exc)``: a handler raised an exception that must stop the consumer.
Abort = Callable[[BaseException], None]

#: How long closing waits for worker threads after a hard exit (they may be stuck in a
#: handler; they are daemons, so the process can leave without them).
_HARD_EXIT_JOIN_S = 0.5


def is_fatal(exc: BaseException) -> bool:
    """Whether a handler's exception should stop the consumer, not only fail its job:
    ``SystemExit``, ``KeyboardInterrupt`` and the like mean "stop", while an
    ``asyncio.CancelledError`` that escapes one handler concerns that job alone."""
    return not isinstance(exc, (Exception, asyncio.CancelledError))


async def _awaited(result: Any) -> Any:
    """``result`` awaited until it is no awaitable: an async def may hand back a coroutine."""
    while inspect.isawaitable(result):
        result = await result
    return result


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close ``loop`` as ``asyncio.run`` does: cancel what is left, finish async
    generators and the default executor, then close (no ResourceWarning)."""
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


class ThreadLoop:
    """An event loop of one thread, made on first use, for handlers declared with a
    plain ``def`` that return a coroutine or another awaitable (an ``async def`` behind
    a decorator): the awaitable runs to completion there, so the job is acked only once
    its handler really ran."""

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def run(self, awaitable: Awaitable[Any]) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(_awaited(awaitable))

    def close(self) -> None:
        if self._loop is not None:
            loop, self._loop = self._loop, None
            _close_loop(loop)


def call_handler(
    handler: Any, ctx: JobCtx, loop: ThreadLoop, tracebacks: bool = False
) -> tuple[Optional[str], float, Optional[BaseException]]:
    """Run a handler on this thread: its error as ``"<ExceptionType>: <message>"``, with
    the traceback after it if ``tracebacks`` (``None`` when it returned), how long it took,
    and the exception if it is one that must stop the consumer (:func:`is_fatal`). An
    awaitable it returns is awaited on ``loop``."""
    started = time.perf_counter()
    fatal: Optional[BaseException] = None
    try:
        result = handler(ctx)
        if inspect.isawaitable(result):
            loop.run(result)
        error = None
    except BaseException as exc:  # every way a handler ends must end its job
        error = failure_text(exc, traceback=tracebacks)
        if is_fatal(exc):
            fatal = exc
    return error, time.perf_counter() - started, fatal


async def call_async_handler(
    handler: Any, ctx: JobCtx, tracebacks: bool = False
) -> tuple[Optional[str], float, Optional[BaseException]]:
    """:func:`call_handler` for an ``async def`` handler, awaited on the running loop."""
    started = time.perf_counter()
    fatal: Optional[BaseException] = None
    try:
        await _awaited(handler(ctx))
        error = None
    except BaseException as exc:  # every way a handler ends must end its job
        error = failure_text(exc, traceback=tracebacks)
        if is_fatal(exc):
            fatal = exc
    return error, time.perf_counter() - started, fatal


class Workers:
    """Where handlers run when not inline: N daemon threads, or an event loop thread for
    ``async def`` handlers. Daemon threads, so exiting at once is possible while a
    handler still runs (its lease then expires)."""

    def __init__(
        self,
        handler: Any,
        concurrency: int,
        *,
        is_async: bool,
        tracebacks: bool,
        received: Received,
        finished: Finished,
        abort: Abort,
    ) -> None:
        self._handler = handler
        self._tracebacks = tracebacks
        self._received = received
        self._finished = finished
        self._abort = abort
        self._threads: list[threading.Thread] = []
        self._jobs: "queue_module.SimpleQueue[Optional[JobCtx]]" = queue_module.SimpleQueue()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._slots: Optional[asyncio.Semaphore] = None
        if is_async:
            self._loop = asyncio.new_event_loop()
            self._slots = asyncio.Semaphore(concurrency)
            self._threads.append(threading.Thread(
                target=self._run_loop, name="omniq-async", daemon=True))  # fmt: skip
        else:
            for i in range(concurrency):
                self._threads.append(threading.Thread(
                    target=self._work, name=f"omniq-worker-{i}", daemon=True))  # fmt: skip
        for thread in self._threads:
            thread.start()

    def submit(self, ctx: JobCtx) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._run_async(ctx), self._loop)
        else:
            self._jobs.put(ctx)

    def _work(self) -> None:
        loop = ThreadLoop()
        try:
            while (ctx := self._jobs.get()) is not None:
                if not self._received(ctx):
                    self._finished(ctx, None, -1.0)
                    continue
                error, seconds, fatal = call_handler(self._handler, ctx, loop, self._tracebacks)
                self._finished(ctx, error, seconds)
                if fatal is not None:
                    self._abort(fatal)
        finally:
            loop.close()

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            asyncio.set_event_loop(None)
            _close_loop(self._loop)

    async def _run_async(self, ctx: JobCtx) -> None:
        assert self._slots is not None
        async with self._slots:  # at most `concurrency` handlers at once
            if not self._received(ctx):
                self._finished(ctx, None, -1.0)
                return
            error, seconds, fatal = await call_async_handler(self._handler, ctx, self._tracebacks)
        self._finished(ctx, error, seconds)
        if fatal is not None:
            self._abort(fatal)

    def close(self, graceful: bool = True) -> None:
        """Stop the threads (or the loop, closing it) and wait for them: at once after a
        graceful stop (nothing runs any more), briefly after a hard exit."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        else:
            for _ in self._threads:
                self._jobs.put(None)
        deadline = None if graceful else time.monotonic() + _HARD_EXIT_JOIN_S
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
