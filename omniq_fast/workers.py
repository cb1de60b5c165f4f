"""Where a consumer's handlers run when not inline: threads, or an event loop for async."""

from __future__ import annotations

import asyncio
import queue as queue_module
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from .context import JobCtx
from .failures import failure_text

if TYPE_CHECKING:
    from .consumer import Consumer

__all__ = ["Workers", "call_handler"]


def call_handler(
    handler: Any, ctx: JobCtx, tracebacks: bool = False
) -> tuple[Optional[str], float]:
    """Run a synchronous handler: its error as ``"<ExceptionType>: <message>"``, with the
    traceback after it if ``tracebacks`` (``None`` when it returned), and how long it took."""
    started = time.perf_counter()
    try:
        handler(ctx)
        error = None
    except Exception as exc:
        error = failure_text(exc, traceback=tracebacks)
    return error, time.perf_counter() - started


class Workers:
    """Where handlers run when not inline: N daemon threads, or an event loop thread for
    ``async def`` handlers. Daemon threads, so exiting at once is possible while a
    handler still runs (its lease then expires)."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._threads: list[threading.Thread] = []
        self._jobs: "queue_module.SimpleQueue[Optional[JobCtx]]" = queue_module.SimpleQueue()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._slots: Optional[asyncio.Semaphore] = None
        if consumer._async:
            self._loop = asyncio.new_event_loop()
            self._slots = asyncio.Semaphore(consumer.concurrency)
            self._threads.append(threading.Thread(
                target=self._loop.run_forever, name="omniq-async", daemon=True))  # fmt: skip
        else:
            for i in range(consumer.concurrency):
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
        consumer = self._consumer
        while (ctx := self._jobs.get()) is not None:
            if not consumer.received(ctx):
                consumer.finished(ctx, None, -1.0)
                continue
            consumer.finished(ctx, *call_handler(consumer.handler, ctx, consumer.tracebacks))

    async def _run_async(self, ctx: JobCtx) -> None:
        consumer = self._consumer
        assert self._slots is not None
        async with self._slots:  # at most `concurrency` handlers at once
            if not consumer.received(ctx):
                consumer.finished(ctx, None, -1.0)
                return
            started = time.perf_counter()
            try:
                await consumer.handler(ctx)
                error = None
            except Exception as exc:
                error = failure_text(exc, traceback=consumer.tracebacks)
        consumer.finished(ctx, error, time.perf_counter() - started)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        else:
            for _ in self._threads:
                self._jobs.put(None)
