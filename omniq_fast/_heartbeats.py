"""The blocking consumer's heartbeat thread: it keeps one queue's leases alive.

What is due and what a reply means is decided by the pure
:class:`~omniq_fast._protocol.leases.LeaseBook`; this thread sleeps until the earliest beat
is due, then sends ``heartbeat_batch`` for every due lease at once.
"""

from __future__ import annotations

import logging
import threading
import time
from types import ModuleType
from typing import Callable, Iterable

from ._protocol.calls import Plan
from ._protocol.leases import (
    BEATS_PER_LEASE,
    Lease,
    LeaseBook,
    default_heartbeat_interval,
)
from ._context import JobCtx
from ._outage import Outage
from .types import JobResult

__all__ = ["HeartbeatScheduler", "default_heartbeat_interval", "BEATS_PER_LEASE"]

log = logging.getLogger("omniq_fast.consumer")

RunPlan = Callable[[Plan[list[JobResult]]], list[JobResult]]

#: With no lease to beat the thread still looks this often, so that a job an idle consumer
#: starts need not wake it (a thread woken just as the handler starts takes the interpreter
#: from it: ~0.1 ms of pickup): only a lease beaten sooner than this look does.
_IDLE_LOOK_S = 1.0


class HeartbeatScheduler:
    """Keeps the leases of one queue's in-flight jobs alive from a single thread.

    ``run_plan`` sends a plan's calls and returns its result; ``now_ms`` reads the wall
    clock the scripts expect."""

    def __init__(
        self, core: ModuleType, queue: str, run_plan: RunPlan, now_ms: Callable[[], int]
    ) -> None:
        self._book = LeaseBook(core, queue)
        self._run_plan = run_plan
        self._now_ms = now_ms
        self._cond = threading.Condition()
        self._closed = False
        self._sleep_until = 0.0
        self._outage = Outage(log, f"heartbeats on {queue}")
        self._thread = threading.Thread(target=self._run, name="omniq-heartbeats", daemon=True)
        self._thread.start()

    def add_many(self, ctxs: list[JobCtx], interval: float) -> None:
        """Start beating these leases every ``interval`` seconds."""
        with self._cond:
            # The thread sleeps until the earliest beat due (or its idle look); wake it
            # only if these are earlier (waking it per job would cost a thread switch per
            # job, and delay the handler about to start).
            due = self._book.add(ctxs, interval, time.monotonic())
            if due < self._sleep_until:
                self._cond.notify()

    def discard(self, job_ids: Iterable[str]) -> None:
        """Stop beating these leases. A beat in flight finishes first (the lock is held
        while sending), so no heartbeat for these jobs follows their ack."""
        with self._cond:
            self._book.drop(job_ids)

    def hold(self, job_ids: Iterable[str]) -> None:
        """Stop beating these leases for now (their acks go out); :meth:`resume` resumes
        them (an ack sent for them may not land)."""
        with self._cond:
            self._book.hold(job_ids)

    def resume(self, job_ids: Iterable[str]) -> None:
        """Beat these held leases again, when they were due (at once if that has passed)."""
        with self._cond:
            if self._book.resume(job_ids):
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._book.clear()
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                due = self._book.next_due()
                now = time.monotonic()
                if due is None or due > now:
                    self._sleep_until = now + _IDLE_LOOK_S if due is None else due
                    self._cond.wait(self._sleep_until - now)
                    continue
                self._beat(self._book.due(now), now)

    def _beat(self, beats: list[Lease], now: float) -> None:
        try:
            results = self._run_plan(self._book.beat_plan(beats, self._now_ms()))
        except Exception as exc:
            self._outage.failed(exc)
            self._book.beat_failed(beats, now)
            return
        self._outage.recovered()
        for ctx, reason in self._book.beaten(beats, results, now):
            log.warning("lease lost for job %s (%s); it will not be acked", ctx.job_id, reason)
