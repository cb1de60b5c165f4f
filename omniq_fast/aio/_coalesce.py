"""The asyncio side of automatic batching: gather a loop turn's publishes, send each
queue's as ``enqueue_batch`` calls, hand every caller its own outcome.

What a reply means for each caller is decided in :mod:`omniq_fast._protocol.coalesce`;
this module only collects, schedules and sends.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Optional

from .._engine import now_ms
from .._protocol.coalesce import DEFAULTS, MAX_SCRIPT_BATCH, copy_error, outcomes
from .._scripts import script
from ..types import Job

if TYPE_CHECKING:
    from ._engine import AsyncEngine

__all__ = ["Coalescer"]

_Entry = tuple[Job, "asyncio.Future[str]"]


class Coalescer:
    """Publishes submitted in one event-loop turn, per queue, sent together after it."""

    def __init__(self, engine: "AsyncEngine") -> None:
        self._engine = engine
        self._script = script("enqueue_batch")
        self._pending: dict[str, tuple[str, list[_Entry]]] = {}
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    def submit(self, queue: str, anchor: str, job: Job) -> "asyncio.Future[str]":
        """Queue ``job`` (checked) for the next batch of ``queue``; its id or its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        entry = self._pending.get(queue)
        if entry is None:
            entry = self._pending[queue] = (anchor, [])
        entry[1].append((job, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, {}, False
        for queue, (anchor, entries) in pending.items():
            # A caller cancelled before its batch goes out: its job is not sent at all.
            live = [entry for entry in entries if not entry[1].done()]
            for start in range(0, len(live), MAX_SCRIPT_BATCH):
                task = asyncio.ensure_future(
                    self._send(queue, anchor, live[start : start + MAX_SCRIPT_BATCH])
                )
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _send(self, queue: str, anchor: str, entries: list[_Entry]) -> None:
        engine = self._engine
        reply: Any
        try:
            await engine.ready()  # the wake command depends on the mode (sharded or not)
            data, ids = engine.core.encode_enqueue_batch(
                self._script.sha, anchor, now_ms(), [job for job, _ in entries], DEFAULTS
            )
            reply = (
                await engine.run_many(anchor, [(self._script, data)], [engine.wake_command(queue)])
            )[0]
        except BaseException as exc:  # lost, refused to connect, cancelled: every caller hears
            first: Optional[BaseException] = exc
            for _, future in entries:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(first or copy_error(exc))
                    first = None
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), outcome in zip(entries, outcomes(queue, ids, reply)):
            if future.done():
                continue  # its caller was cancelled meanwhile; the job was sent all the same
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def close(self) -> None:
        """Wait for the batches on their way (their callers get their outcomes)."""
        if self._pending:
            self._flush()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
