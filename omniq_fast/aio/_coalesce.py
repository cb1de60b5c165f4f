"""The asyncio side of automatic batching: gather a loop turn's publishes, send each
queue's as ``enqueue_batch`` calls, hand every caller its own outcome.

What a reply means for each caller is decided in :mod:`omniq_fast._protocol.coalesce`;
this module only collects, schedules and sends.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Optional

from .._engine import now_ms
from .._options import EnqueueOptions
from .._protocol.coalesce import MAX_SCRIPT_BATCH, batch_command, copy_error, outcomes
from .._scripts import script

if TYPE_CHECKING:
    from ._engine import AsyncEngine

__all__ = ["Coalescer"]


class _Batch:
    """One queue's publishes waiting to go: each caller's future, job id and encoded part."""

    __slots__ = ("anchor", "futures", "ids", "parts")

    def __init__(self, anchor: str) -> None:
        self.anchor = anchor
        self.futures: list[asyncio.Future[str]] = []
        self.ids: list[str] = []
        self.parts: list[bytes] = []


class Coalescer:
    """Publishes submitted in one event-loop turn, per queue, sent together after it (or
    as soon as a queue's batch is full)."""

    def __init__(self, engine: "AsyncEngine") -> None:
        self._engine = engine
        self._script = script("enqueue_batch")
        self._pending: dict[str, _Batch] = {}
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        #: Each option set's encoded arguments (:func:`~omniq_fast._protocol.coalesce.checked_item`).
        self.tails: dict[EnqueueOptions, bytes] = {}

    def submit(self, queue: str, anchor: str, job_id: str, part: bytes) -> "asyncio.Future[str]":
        """Queue a checked job (its id and its encoded part of the batch command) for the
        next batch of ``queue``; the future of its id or its error.

        A batch of the script's most jobs goes at once, the others at the end of the loop
        turn; either is written on the open connection right away.
        """
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        batch = self._pending.get(queue)
        if batch is None:
            batch = self._pending[queue] = _Batch(anchor)
            if not self._scheduled:
                self._scheduled = True
                future.get_loop().call_soon(self._flush)
        batch.futures.append(future)
        batch.ids.append(job_id)
        batch.parts.append(part)
        if len(batch.ids) >= MAX_SCRIPT_BATCH:
            del self._pending[queue]
            self._send(queue, batch)
        return future

    def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, {}, False
        for queue, batch in pending.items():
            self._send(queue, batch)

    def _send(self, queue: str, batch: _Batch) -> None:
        futures, ids, parts = batch.futures, batch.ids, batch.parts
        if any(future.done() for future in futures):
            # A caller cancelled before its batch goes out: its job is not sent at all.
            live = [i for i, future in enumerate(futures) if not future.done()]
            if not live:
                return
            futures = [futures[i] for i in live]
            ids = [ids[i] for i in live]
            parts = [parts[i] for i in live]
        engine = self._engine
        waiting: Optional[Awaitable[list[Any]]] = None
        failed: Optional[BaseException] = None
        try:
            if not engine.mode_known:
                # The wake command depends on the mode (sharded pub/sub on a cluster).
                waiting = self._after_ready(queue, batch.anchor, parts)
            else:
                data = batch_command(engine.core, self._script.sha, batch.anchor, now_ms(), parts)
                # Written now when the connection is open (not a loop turn or two later).
                waiting = engine.send_many(
                    batch.anchor, [(self._script, data)], [engine.wake_command(queue)]
                )
        except Exception as exc:  # pragma: no cover - the parts are checked bytes
            failed = exc
        task = asyncio.ensure_future(self._deliver(queue, futures, ids, waiting, failed))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _after_ready(self, queue: str, anchor: str, parts: list[bytes]) -> list[Any]:
        """The first batches, sent once the server's mode (cluster or not) is known."""
        engine = self._engine
        await engine.ready()
        data = batch_command(engine.core, self._script.sha, anchor, now_ms(), parts)
        return await engine.run_many(anchor, [(self._script, data)], [engine.wake_command(queue)])

    async def _deliver(
        self,
        queue: str,
        futures: list[asyncio.Future[str]],
        ids: list[str],
        waiting: Optional[Awaitable[list[Any]]],
        failed: Optional[BaseException],
    ) -> None:
        reply: Any
        try:
            if waiting is None:
                assert failed is not None
                raise failed
            reply = (await waiting)[0]
        except BaseException as exc:  # lost, refused to connect, cancelled: every caller hears
            first: Optional[BaseException] = exc
            for future in futures:
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
        for future, outcome in zip(futures, outcomes(queue, ids, reply)):
            if future.done():
                continue  # its caller was cancelled meanwhile; the job was sent all the same
            if isinstance(outcome, str):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

    async def close(self) -> None:
        """Wait for the batches on their way (their callers get their outcomes)."""
        if self._pending:
            self._flush()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
