"""Completed and failed jobs per minute over the last hour, kept in the dashboard process.

Queues keep no cumulative counters (PROTOCOL.md §4: ``completed_kept`` is a list length,
``failed`` goes down on retry), so the sampler counts lane *entries* instead: jobs whose
``idx:completed`` / ``idx:failed`` score is newer than the newest one seen at the previous
sample. Nothing is written to Redis.

The completed lane keeps only the 100 newest jobs: when every kept job is new since the
last sample the count is saturated, and the number of leases that ended (lease counter
delta minus the change in active jobs) minus new failures stands in for it, which also
counts retries as completions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

from ..monitor import QueueActivity

__all__ = ["History", "COMPLETED_KEPT"]

MINUTES = 60
#: How many completed jobs a queue keeps (PROTOCOL.md §5 ack_success).
COMPLETED_KEPT = 100
#: The minutes averaged for the rates shown next to each queue.
RATE_MINUTES = 5


@dataclass
class _QueueHistory:
    completed_mark: int
    failed_mark: int
    lease_seq: int
    active: int
    # (minute, completed, failed), oldest first.
    minutes: deque[list[int]]


class History:
    """Per-queue per-minute counts, fed with :class:`~omniq_fast.monitor.QueueActivity`
    samples; ``now_s`` is always passed in (no clock reads here)."""

    def __init__(self) -> None:
        self._queues: dict[str, _QueueHistory] = {}

    def marks(self) -> dict[str, tuple[int, int]]:
        """The marks to sample with next (queues never sampled have none)."""
        return {q: (h.completed_mark, h.failed_mark) for q, h in self._queues.items()}

    def record(self, now_s: float, sample: QueueActivity) -> None:
        queue = sample.stats.queue
        known = self._queues.get(queue)
        if known is None:  # the first sample only sets the marks
            self._queues[queue] = _QueueHistory(
                sample.completed_newest_ms, sample.failed_newest_ms, sample.lease_seq,
                sample.stats.active, deque(maxlen=MINUTES),
            )
            return
        completed, failed = sample.completed_since, sample.failed_since
        if completed >= COMPLETED_KEPT:  # every kept job is new: the count is saturated
            ended = (sample.lease_seq - known.lease_seq) - (sample.stats.active - known.active)
            completed = max(completed, ended - failed)
        known.completed_mark = max(known.completed_mark, sample.completed_newest_ms)
        known.failed_mark = max(known.failed_mark, sample.failed_newest_ms)
        known.lease_seq, known.active = sample.lease_seq, sample.stats.active
        minute = int(now_s // 60)
        if known.minutes and known.minutes[-1][0] == minute:
            known.minutes[-1][1] += completed
            known.minutes[-1][2] += failed
        else:
            known.minutes.append([minute, completed, failed])

    def series(self, queue: Optional[str], now_s: float) -> dict[str, list[int]]:
        """The last hour minute by minute (``minute`` is epoch minutes), oldest first, of
        one queue or, with ``None``, of all queues summed; minutes without samples are 0."""
        last = int(now_s // 60)
        first = last - MINUTES + 1
        completed = [0] * MINUTES
        failed = [0] * MINUTES
        histories = self._queues.values() if queue is None else (
            [self._queues[queue]] if queue in self._queues else []
        )
        for history in histories:
            for minute, done, bad in history.minutes:
                if first <= minute <= last:
                    completed[minute - first] += done
                    failed[minute - first] += bad
        return {"minute": list(range(first, last + 1)), "completed": completed, "failed": failed}

    def rates(self, queue: str, now_s: float) -> tuple[float, float]:
        """(completed per minute, failed share of finished jobs) over the last
        :data:`RATE_MINUTES` minutes, the current one included."""
        series = self.series(queue, now_s)
        done = sum(series["completed"][-RATE_MINUTES:])
        bad = sum(series["failed"][-RATE_MINUTES:])
        return done / RATE_MINUTES, (bad / (done + bad) if done + bad else 0.0)
