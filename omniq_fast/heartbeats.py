"""One heartbeat scheduler per consumer: every in-flight lease, due beats sent as one batch.

Leases are registered when reserved (prefetched jobs included: their lease runs from the
reserve) and dropped when acked or released. A thread sleeps until the earliest beat is
due, then sends ``heartbeat_batch`` for every due lease at once. A ``NOT_ACTIVE`` or
``TOKEN_MISMATCH`` answer means the lease was taken away (reaped, re-reserved): the lease
is marked lost and the consumer will not ack it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Optional

from .context import JobCtx
from .outage import Backoff, Outage

if TYPE_CHECKING:
    from .client import Client

__all__ = ["HeartbeatScheduler", "default_heartbeat_interval", "BEATS_PER_LEASE"]

log = logging.getLogger("omniq_fast.consumer")

_LOST = frozenset(("NOT_ACTIVE", "TOKEN_MISMATCH"))


#: Beats per lease: the lease survives two lost or late beats in a row.
BEATS_PER_LEASE = 3
#: The shortest interval: a lease this short or shorter is beaten this often (a beat
#: changes no keyspace beyond the lease's end, so beating often is only a round trip).
MIN_INTERVAL_S = 0.05


def default_heartbeat_interval(timeout_ms: int) -> float:
    """A third of the lease, between 50 ms and 10 s.

    The heartbeat thread needs the GIL for a moment per beat. A pure-Python handler, even
    a CPU-bound one, hands the GIL over every ``sys.getswitchinterval()`` (5 ms by
    default), so a third of a lease of a few hundred ms is plenty; a C call that holds the
    GIL longer than the lease (some C extensions do) cannot be helped from Python: give
    such jobs a lease longer than that call.
    """
    return min(10.0, max(MIN_INTERVAL_S, timeout_ms / (1000.0 * BEATS_PER_LEASE)))


class _Lease:
    __slots__ = ("ctx", "interval", "due")

    def __init__(self, ctx: JobCtx, interval: float, due: float) -> None:
        self.ctx = ctx
        self.interval = interval
        self.due = due


class HeartbeatScheduler:
    """Keeps the leases of one queue's in-flight jobs alive from a single thread."""

    def __init__(self, client: "Client", queue: str) -> None:
        self._client = client
        self._queue = queue
        self._leases: dict[str, _Lease] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._sleep_until = 0.0
        self._backoff = Backoff()
        self._outage = Outage(log, f"heartbeats on {queue}")
        self._thread = threading.Thread(target=self._run, name="omniq-heartbeats", daemon=True)
        self._thread.start()

    def add_many(self, ctxs: list[JobCtx], interval: float) -> None:
        """Start beating these leases every ``interval`` seconds."""
        due = time.monotonic() + interval
        with self._cond:
            # The thread sleeps until the earliest beat due; wake it only if these are
            # earlier (waking it per job would cost a thread switch per job).
            earlier = not self._leases or due < self._sleep_until
            for ctx in ctxs:
                self._leases[ctx.job_id] = _Lease(ctx, interval, due)
            if earlier:
                self._cond.notify()

    def discard(self, *job_ids: str) -> None:
        """Stop beating these leases. A beat in flight finishes first (the lock is held
        while sending), so no heartbeat for these jobs follows their ack."""
        with self._cond:
            for job_id in job_ids:
                self._leases.pop(job_id, None)

    def take(self, *job_ids: str) -> list[_Lease]:
        """Stop beating these leases for now; :meth:`put_back` resumes them (an ack sent
        for them may not land)."""
        with self._cond:
            taken = [self._leases.pop(job_id, None) for job_id in job_ids]
        return [lease for lease in taken if lease is not None]

    def put_back(self, leases: list[_Lease]) -> None:
        """Beat these leases again, when they were due (at once if that has passed)."""
        if not leases:
            return
        with self._cond:
            for lease in leases:
                self._leases[lease.ctx.job_id] = lease
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._leases.clear()
            self._cond.notify()
        self._thread.join(timeout=5)

    def _next_due(self) -> Optional[float]:
        return min((lease.due for lease in self._leases.values()), default=None)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                due = self._next_due()
                now = time.monotonic()
                if due is None or due > now:
                    self._sleep_until = float("inf") if due is None else due
                    self._cond.wait(None if due is None else due - now)
                    continue
                beats = [lease for lease in self._leases.values() if lease.due <= now]
                self._beat(beats, now)

    def _beat(self, beats: list[_Lease], now: float) -> None:
        try:
            results = self._client.heartbeat_many(
                self._queue, [(lease.ctx.job_id, lease.ctx.lease_token) for lease in beats]
            )
        except Exception as exc:
            # The leases may still be fine (a lost connection, a loading or busy server):
            # try again with backoff, but never later than the next regular beat.
            self._outage.failed(exc)
            delay = self._backoff.delay()
            for lease in beats:
                lease.due = now + min(delay, lease.interval)
            return
        self._backoff.reset()
        self._outage.recovered()
        for lease, result in zip(beats, results):
            if result.status == "OK" and result.ms is not None:
                lease.ctx.lock_until_ms = result.ms
                lease.due = now + lease.interval
            elif result.reason in _LOST:
                lease.ctx.lease_lost = True
                self._leases.pop(lease.ctx.job_id, None)
                log.warning(
                    "lease lost for job %s (%s); it will not be acked",
                    lease.ctx.job_id, result.reason,
                )  # fmt: skip
            else:
                lease.due = now + lease.interval
