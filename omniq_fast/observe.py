"""Watching a consumer: the :class:`ConsumerObserver` protocol and the guard that calls it.

Pass ``observer=`` to :class:`~omniq_fast.Consumer` (or ``consume``, ``MultiConsumer``,
``Client.consume``) to hear about every job: :meth:`~ConsumerObserver.job_started` when its
handler is about to run (on the thread that runs it: the dispatcher, a worker thread or the
event loop's thread), and :meth:`~ConsumerObserver.job_finished` on the dispatcher thread
once its outcome is known:

* ``completed``: the handler returned and ``ack_success`` was accepted;
* ``retried`` / ``failed``: the handler raised and ``ack_fail`` answered ``RETRY`` /
  ``FAILED``;
* ``lease_lost``: the lease was taken away while the job ran (a heartbeat said so, or the
  ack was refused), so the job was not acked;
* ``released``: a prefetched job whose handler never started, given back at stop (no
  ``job_started`` came before it).

``duration_s`` is the handler's run time, ``None`` for ``released``. An ack sent again after
a lost connection and refused most likely landed the first time: its job is reported with
the outcome that ack would have had (the server's rule: the last attempt fails, the others
retry). :class:`~omniq_fast.metrics.WorkerMetrics` is an observer.

Observers must be quick (they run on the consumer's threads) and thread-safe. One that
raises never breaks the consumer: the first error is logged with its traceback, later ones
are dropped.
"""

from __future__ import annotations

import logging
from typing import Literal, Optional, Protocol

from ._context import JobCtx

__all__ = ["Outcome", "OUTCOMES", "ConsumerObserver", "ObserverGuard"]

log = logging.getLogger("omniq_fast.consumer")

Outcome = Literal["completed", "failed", "retried", "lease_lost", "released"]
#: Every :data:`Outcome`, in the order a job's life reaches them.
OUTCOMES: tuple[Outcome, ...] = ("completed", "failed", "retried", "lease_lost", "released")


class ConsumerObserver(Protocol):
    """What a consumer tells an observer (see the module docstring for when)."""

    def job_started(self, ctx: JobCtx) -> None:
        """The handler is about to run ``ctx``."""

    def job_finished(self, ctx: JobCtx, outcome: Outcome, duration_s: Optional[float]) -> None:
        """``ctx``'s outcome is known; ``duration_s`` is its handler's time, if it ran."""


class ObserverGuard:
    """The consumer's side of an observer: calls it safely and keeps each job's handler
    time from when the handler returns until the outcome is known."""

    __slots__ = ("observer", "_durations", "_warned")

    def __init__(self, observer: ConsumerObserver) -> None:
        self.observer = observer
        # Touched by the dispatcher thread only (handled() and finished()).
        self._durations: dict[str, float] = {}
        self._warned = False

    def started(self, ctx: JobCtx) -> None:
        try:
            self.observer.job_started(ctx)
        except Exception:
            self._failed("job_started")

    def handled(self, ctx: JobCtx, seconds: float) -> None:
        """The handler of ``ctx`` returned or raised after ``seconds``; the ack follows."""
        self._durations[ctx.job_id] = seconds

    def finished(self, ctx: JobCtx, outcome: Outcome) -> None:
        duration = self._durations.pop(ctx.job_id, None)
        try:
            self.observer.job_finished(ctx, outcome, duration)
        except Exception:
            self._failed("job_finished")

    def fail_outcome(self, ctx: JobCtx, status: str) -> None:
        """``ack_fail`` answered ``status``: report ``retried`` or ``failed``."""
        self.finished(ctx, "retried" if status == "RETRY" else "failed")

    def unknown_outcome(self, ctx: JobCtx, op: str) -> None:
        """A re-sent ack was refused: the first one most likely landed. Report what it
        did: ``ack_fail`` fails the last attempt (``max_attempts`` <= 0 counts as 1)."""
        if op == "ack_success":
            self.finished(ctx, "completed")
        else:
            self.finished(ctx, "failed" if ctx.attempt >= max(1, ctx.max_attempts) else "retried")

    def _failed(self, method: str) -> None:
        if not self._warned:
            self._warned = True
            log.error("consumer observer %r raised in %s; its later errors are not logged",
                      self.observer, method, exc_info=True)  # fmt: skip
