"""The heartbeat book: every in-flight lease of one queue, when each is due, what a beat
reply says.

Pure: the shells (a thread for :class:`~omniq_fast.Consumer`, a task for
:class:`~omniq_fast.AsyncConsumer`) read the clock, pass ``now`` (monotonic seconds, and
the wall clock in ms for the calls) and sleep until :meth:`LeaseBook.next_due`.

Leases are added when reserved (prefetched jobs included: their lease runs from the
reserve) and dropped when acked or released. A lease whose ack is in flight is *held*: not
beaten, but kept, so that it is beaten again if that ack did not run. A ``NOT_ACTIVE`` or
``TOKEN_MISMATCH`` answer means the lease was taken away (reaped, re-reserved): the lease is
marked lost and the consumer will not ack it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Iterable, Optional, Sequence

from .._context import JobCtx
from ..types import JobResult
from . import calls
from .backoff import Backoff

__all__ = [
    "LeaseBook", "Lease", "default_heartbeat_interval", "BEATS_PER_LEASE", "MIN_INTERVAL_S",
    "LOST_REASONS",
]  # fmt: skip

#: Beats per lease: the lease survives two lost or late beats in a row.
BEATS_PER_LEASE = 3
#: The shortest interval: a lease this short or shorter is beaten this often (a beat
#: changes no keyspace beyond the lease's end, so beating often is only a round trip).
MIN_INTERVAL_S = 0.05
#: Beat replies that mean the lease is gone (taken by a reap or another consumer).
LOST_REASONS = frozenset(("NOT_ACTIVE", "TOKEN_MISMATCH"))


def default_heartbeat_interval(timeout_ms: int) -> float:
    """A third of the lease, between 50 ms and 10 s.

    The heartbeat thread needs the GIL for a moment per beat. A pure-Python handler, even
    a CPU-bound one, hands the GIL over every ``sys.getswitchinterval()`` (5 ms by
    default), so a third of a lease of a few hundred ms is plenty; a C call that holds the
    GIL longer than the lease (some C extensions do) cannot be helped from Python: give
    such jobs a lease longer than that call.
    """
    return min(10.0, max(MIN_INTERVAL_S, timeout_ms / (1000.0 * BEATS_PER_LEASE)))


class Lease:
    """One job's lease in the book: beaten every ``interval`` seconds, next at ``due``."""

    __slots__ = ("ctx", "interval", "due")

    def __init__(self, ctx: JobCtx, interval: float, due: float) -> None:
        self.ctx = ctx
        self.interval = interval
        self.due = due


class LeaseBook:
    """The leases of one queue's in-flight jobs and when each is next due."""

    def __init__(self, core: ModuleType, queue: str) -> None:
        self._core = core
        self._queue = queue
        self._leases: dict[str, Lease] = {}
        self._held: dict[str, Lease] = {}  # acks in flight: kept, not beaten
        self.backoff = Backoff()

    def __len__(self) -> int:
        return len(self._leases)

    def add(self, ctxs: Iterable[JobCtx], interval: float, now: float) -> float:
        """Beat these leases every ``interval`` seconds from ``now``; returns when the
        first of them is due."""
        due = now + interval
        for ctx in ctxs:
            self._leases[ctx.job_id] = Lease(ctx, interval, due)
        return due

    def drop(self, job_ids: Iterable[str]) -> None:
        """Forget these leases (acked, released, lost), held ones included."""
        for job_id in job_ids:
            self._leases.pop(job_id, None)
            self._held.pop(job_id, None)

    def hold(self, job_ids: Iterable[str]) -> None:
        """Stop beating these leases for now (their acks go out); :meth:`resume` beats
        them again."""
        for job_id in job_ids:
            lease = self._leases.pop(job_id, None)
            if lease is not None:
                self._held[job_id] = lease

    def resume(self, job_ids: Iterable[str]) -> bool:
        """Beat these held leases again, when they were due (at once if that has
        passed); whether any was held."""
        resumed = False
        for job_id in job_ids:
            lease = self._held.pop(job_id, None)
            if lease is not None:
                self._leases[job_id] = lease
                resumed = True
        return resumed

    def clear(self) -> None:
        self._leases.clear()
        self._held.clear()

    def next_due(self) -> Optional[float]:
        """When the earliest lease is due (None when there is none)."""
        return min((lease.due for lease in self._leases.values()), default=None)

    def due(self, now: float) -> list[Lease]:
        """The leases to beat at ``now``."""
        return [lease for lease in self._leases.values() if lease.due <= now]

    def beat_plan(self, leases: Sequence[Lease], now_ms: int) -> calls.Plan[list[JobResult]]:
        """The ``heartbeat_batch`` calls that beat ``leases`` (1000 per call)."""
        pairs = [(lease.ctx.job_id, lease.ctx.lease_token) for lease in leases]
        return calls.per_lease(self._core, "heartbeat_batch", self._queue, pairs, None, now_ms, 2)

    def beat_failed(self, leases: Sequence[Lease], now: float) -> None:
        """The beat did not get through: the leases may still be fine (a lost
        connection, a loading or busy server), so try again with backoff, but never later
        than the next regular beat."""
        delay = self.backoff.delay()
        for lease in leases:
            lease.due = now + min(delay, lease.interval)

    def beaten(
        self, leases: Sequence[Lease], results: Sequence[JobResult], now: float
    ) -> list[tuple[JobCtx, str]]:
        """Read a beat's results: each lease's new deadline, or its loss. Returns the lost
        leases with the reason (their jobs are marked ``lease_lost``, never to be acked)."""
        self.backoff.reset()
        lost: list[tuple[JobCtx, str]] = []
        for lease, result in zip(leases, results):
            if result.status == "OK" and result.ms is not None:
                lease.ctx.lock_until_ms = result.ms
                lease.due = now + lease.interval
            elif result.reason in LOST_REASONS:
                lease.ctx.lease_lost = True
                self._leases.pop(lease.ctx.job_id, None)
                lost.append((lease.ctx, result.reason or ""))
            else:
                lease.due = now + lease.interval
        return lost
