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

if TYPE_CHECKING:
    from .client import Client

__all__ = ["HeartbeatScheduler", "default_heartbeat_interval"]

log = logging.getLogger("omniq_fast.consumer")

_LOST = frozenset(("NOT_ACTIVE", "TOKEN_MISMATCH"))


def default_heartbeat_interval(timeout_ms: int) -> float:
    """Half the lease, between 1 s and 10 s."""
    return min(10.0, max(1.0, timeout_ms / 2000.0))


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
        except Exception:
            # Transient: the leases may still be fine; try again soon, not in a tight loop.
            log.warning("heartbeat batch failed on %s", self._queue, exc_info=True)
            for lease in beats:
                lease.due = now + min(1.0, lease.interval)
            return
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
