"""The consumer: reserve → handler → ack, for busy queues and idle ones.

Semantics follow PROTOCOL.md §6 (the official SDKs' consumer): a handler that returns is
acked as completed, one that raises is acked as failed with ``"<ExceptionType>: <message>"``
(retried until ``max_attempts``); a lease lost while the handler ran is never acked.

What makes it fast, all on one dispatcher thread that owns the round trips:

* **Prefetch**: jobs are reserved in batches (``reserve_batch``) while handlers run; the
  batch bound adapts to the observed handler time so a prefetched job starts well within its
  lease, and prefetched jobs are heartbeated like running ones. At most
  ``DEFAULT_PREFETCH`` (64) unless ``prefetch=`` says otherwise: a process that dies burns
  one attempt of every job it holds, so a job reserved with ``attempt > 1`` (it was reaped
  or retried) runs alone, with nothing else held, and a crash-looping job fails alone.
* **Batched acks**: outcomes are acked together, in the same round trip as the next
  reserve when there is one, otherwise within ``ack_delay_s``.
* **Concurrency**: ``concurrency=N`` runs N handlers on worker threads, or N coroutines on
  an event loop for ``async def`` handlers; with one synchronous handler the dispatcher
  runs it itself (no thread hand-off).
* **Wake-ups**: an idle consumer is told by the server (key tracking) of every write that
  makes a job reservable, whoever made it, and of changes to the delayed and leased sets;
  it reserves when woken, promotes and reaps when the server says something is due, and
  polls only every few seconds as a safety net. Where the server has no tracking it waits
  on the queue's wake channel (omniq-fast producers publish to it) and polls every
  ``poll_interval_s`` as before.
"""

from __future__ import annotations

import logging
import time
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ._consumer_engine import Answered, Failed, Pending, engine_of, now_ms
from ._protocol.idle import Change
from ._protocol.dispatch import DEFAULT_PREFETCH, MAX_PREFETCH, STOP_PATIENCE_S, Dispatcher, Trip
from ._protocol.effects import (
    Effect, Failing, HoldBeats, Line, Log, Recovered, Release, Report, ResumeBeats,
    StartBeats, StopBeats,
)  # fmt: skip
from ._context import CheckCompletion, ConsumerStats, Exec, JobCtx
from .errors import TRANSIENT_ERRORS
from ._heartbeats import HeartbeatScheduler, default_heartbeat_interval
from .keys import validate_queue_name
from .observe import ConsumerObserver, ObserverGuard
from ._options import check_consumer_options
from ._outage import Outage
from ._reporting import is_async_handler, received_line, report
from ._stopping import LineLogger, StopOnSignals, signals_to_main_thread
from ._waiting import Wakeup
from ._wake import WakeListener
from ._workers import ThreadLoop, Workers, call_handler

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "StopOnSignals",
    "JobCtx",
    "Exec",
    "CheckCompletion",
    "Consumer",
    "ConsumerStats",
    "consume",
    "default_heartbeat_interval",
    "DEFAULT_PREFETCH",
    "MAX_PREFETCH",
    "LineLogger",
]

log = logging.getLogger("omniq_fast.consumer")

Handler = Callable[[JobCtx], Any]


class Sent:
    """A trip on the wire: its calls written, its replies to read from ``wire`` (a failed
    write reads as its error)."""

    __slots__ = ("trip", "wire")

    def __init__(self, trip: Trip, wire: Union[Pending, Answered, Failed]) -> None:
        self.trip, self.wire = trip, wire


class Consumer(StopOnSignals):
    """A consumer of one queue; :meth:`run` blocks until stopped.

    Stop it with :meth:`stop` (from any thread), ``max_jobs``, SIGTERM, or Ctrl+C. With
    ``drain=True`` running jobs finish and are acked, and prefetched jobs that never
    started are given back to the head of their lane as if never reserved; a second
    Ctrl+C exits at once. With ``drain=False`` Ctrl+C exits at once: nothing more is acked,
    and the leases of unfinished jobs simply expire (the jobs are retried).
    """

    def __init__(
        self,
        client: "Client",
        queue: str,
        handler: Handler,
        *,
        poll_interval_s: float = 0.05,
        promote_interval_s: float = 1.0,
        promote_batch: int = 1000,
        reap_interval_s: float = 1.0,
        reap_batch: int = 1000,
        heartbeat_interval_s: Optional[float] = None,
        verbose: bool = False,
        logger: LineLogger = print,
        drain: bool = True,
        stop_on_ctrl_c: bool = True,
        max_jobs: Optional[int] = None,
        concurrency: int = 1,
        prefetch: Optional[int] = None,
        ack_delay_s: float = 0.002,
        wake: bool = True,
        observer: Optional[ConsumerObserver] = None,
        tracebacks: bool = True,
        burst: bool = False,
    ) -> None:
        check_consumer_options(
            handler, poll_interval_s=poll_interval_s, promote_interval_s=promote_interval_s,
            promote_batch=promote_batch, reap_interval_s=reap_interval_s,
            reap_batch=reap_batch, heartbeat_interval_s=heartbeat_interval_s, verbose=verbose,
            logger=logger, drain=drain, stop_on_ctrl_c=stop_on_ctrl_c, max_jobs=max_jobs,
            concurrency=concurrency, prefetch=prefetch, ack_delay_s=ack_delay_s, wake=wake,
            observer=observer, tracebacks=tracebacks, burst=burst,
        )  # fmt: skip
        self.client = client
        self.queue = validate_queue_name(queue)
        self.handler = handler
        self.poll_interval_s = poll_interval_s
        self.promote_interval_s = promote_interval_s
        self.promote_batch = promote_batch
        self.reap_interval_s = reap_interval_s
        self.reap_batch = reap_batch
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_jobs = max_jobs
        self.concurrency = concurrency
        self.prefetch = DEFAULT_PREFETCH if prefetch is None else prefetch
        self.ack_delay_s = ack_delay_s
        self.wake = wake
        self.tracebacks = tracebacks
        self.burst = burst
        self._observer = ObserverGuard(observer) if observer is not None else None
        self._init_controls(verbose, logger, drain, stop_on_ctrl_c)
        self._engine = engine_of(client)
        # Every decision: how much to reserve, when to ack, what a reply means.
        self._dispatch = Dispatcher(
            self._engine.core, self.queue, lambda job_id: Exec(client, job_id),
            concurrency=concurrency, prefetch=self.prefetch, max_jobs=max_jobs,
            poll_interval_s=poll_interval_s, promote_interval_s=promote_interval_s,
            promote_batch=promote_batch, reap_interval_s=reap_interval_s,
            reap_batch=reap_batch, heartbeat_interval_s=heartbeat_interval_s,
            ack_delay_s=ack_delay_s, burst=burst, verbose=verbose,
            observed=observer is not None,
        )  # fmt: skip
        self.stats: ConsumerStats = self._dispatch.stats
        self._stop = threading.Event()
        self._event = Wakeup()  # anything the dispatcher should look at
        self._listener: Optional[WakeListener] = None  # lent to the dispatcher's waits
        self._async = is_async_handler(handler)
        self._inline = concurrency == 1 and not self._async
        self._closing = False  # workers return jobs they have not started
        # Handler completions, appended by worker threads, read by the dispatcher.
        self._done: deque[tuple[JobCtx, Optional[str], float]] = deque()
        self._outage = Outage(log, f"consumer of {queue}")
        # A handler's SystemExit/KeyboardInterrupt/...: stop gracefully, then re-raise it.
        self._fatal: Optional[BaseException] = None
        self._thread_loop = ThreadLoop()  # inline handlers that return an awaitable
        self._beats: Optional[HeartbeatScheduler] = None

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the consumer to finish what it started and exit (safe from any thread)."""
        self._stop.set()
        self._event.set()

    def abort(self, exc: BaseException) -> None:
        """A handler raised ``exc``, which must stop the consumer (``SystemExit``,
        ``KeyboardInterrupt``...): its job is failed as usual, the consumer stops
        gracefully, and :meth:`run` re-raises the first such exception at the end."""
        if self._fatal is None:
            self._fatal = exc
        log.error("handler raised %s on %s; stopping the consumer", type(exc).__name__,
                  self.queue)  # fmt: skip
        self.stop()

    def wake_up(self) -> None:
        """Jobs were announced on the queue (called by the wake listener)."""
        self._dispatch.woken = True
        self._event.set()

    def _tracked(self, tracking: bool) -> None:
        """The wake listener armed key tracking (True) or lost it (False): the timers
        switch between the server's due times and fixed intervals."""
        self._dispatch.timers.arm(tracking)
        self._event.set()

    def _changed(self, change: Change) -> None:
        """The server told the wake listener of writes to the queue's tracked keys."""
        self._dispatch.told(change)
        self._event.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or a signal, ``max_jobs`` or ``burst`` asked)."""
        return self._stop.is_set()

    # ------------------------------------------------------------------ run

    def run(self) -> ConsumerStats:
        """Consume until stopped; returns what was done.

        If a handler raised ``SystemExit``, ``KeyboardInterrupt`` or another
        ``BaseException`` that is not an ``Exception``, that job is failed, the consumer
        stops gracefully, and the exception is raised here afterwards."""
        restore = self._install_signals()
        engine = self._engine
        with signals_to_main_thread():  # our threads leave SIGINT/SIGTERM to the handler's
            self._beats = HeartbeatScheduler(engine.core, self.queue, engine.run_plan, now_ms)
            workers = None
            if not self._inline:
                workers = Workers(
                    self.handler, self.concurrency, is_async=self._async,
                    tracebacks=self.tracebacks, received=self.received,
                    finished=self.finished, abort=self.abort,
                )  # fmt: skip
            listener = None
            if self.wake:
                listener = WakeListener(
                    self.queue, self.wake_up, engine.mode, lambda: engine.redis,
                    core=engine.core, armed=self._tracked, changed=self._changed,
                    nudge=self._event.set,
                )  # fmt: skip
            self._listener = listener
        graceful = False
        try:
            self._loop(workers)
            self._finish()
            graceful = True
        except KeyboardInterrupt:
            pass  # exit at once: unfinished jobs are not acked; their leases expire
        finally:
            self._listener = None
            if listener is not None:
                listener.close()
            if workers is not None:
                workers.close(graceful)
            self._thread_loop.close()
            self._beats.close()
            self._event.close()
            restore()
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    def _loop(self, workers: Optional[Workers]) -> None:
        dispatch = self._dispatch
        # Inline handlers (concurrency 1) would leave the server idle while they run and
        # themselves idle while the server answers: so while jobs are in hand, trips go
        # out ahead (up to AHEAD unanswered, in order on one connection) and the jobs run
        # while they are on the wire; replies are read once they have begun to come, or
        # when there is nothing else to do. Worker threads overlap by themselves (they
        # run while the dispatcher waits on a round trip).
        ahead = workers is None
        sent: deque[Sent] = deque()
        try:
            while True:
                self._event.clear()
                self._collect()
                stopping = self._stop.is_set()
                while sent and (stopping or sent[0].wire.answered()):
                    self._receive(sent.popleft())
                if stopping:
                    self._closing = True
                    if dispatch.running == 0 and not sent:
                        return
                now = time.monotonic()
                trip = dispatch.plan(now, now_ms(), stopping, ahead)
                if trip is not None:
                    out = self._send(trip, sent[-1] if sent else None)
                    if ahead and dispatch.runs_meanwhile(stopping):
                        sent.append(out)  # read later, in order
                    else:
                        self._receive(out)  # nothing to run meanwhile (none on the wire)
                if dispatch.should_stop():
                    self.stop()
                    continue
                if workers is not None:
                    while (ctx := dispatch.next_job(stopping)) is not None:
                        workers.submit(ctx)
                elif (ctx := dispatch.next_job(stopping)) is not None:
                    self._run_inline(ctx)
                    continue
                if sent:  # nothing to run until the oldest trip's replies are in
                    self._receive(sent.popleft())
                    continue
                self._event.wait(dispatch.wait_time(now, stopping), self._listener)
        finally:
            for out in sent:
                out.wire.abandon()  # leaving at once (Ctrl+C): their outcome stays unknown

    def _send(self, trip: Trip, after: Optional["Sent"] = None) -> "Sent":
        """Write the trip's calls (after ``after``'s, on its connection); their replies
        are read by :meth:`_receive`."""
        self._apply(self._dispatch.take_effects())  # hold the beats of the acks going out
        try:
            before = None if after is None else after.wire
            wire = self._engine.send_many(trip.anchor, trip.calls, before)
        except TRANSIENT_ERRORS as exc:
            return Sent(trip, Failed(exc))
        return Sent(trip, wire)

    def _receive(self, sent: "Sent") -> None:
        """Read the replies of a trip :meth:`_send` wrote, and act on them."""
        dispatch, trip = self._dispatch, sent.trip
        try:
            replies = sent.wire.result()
        except TRANSIENT_ERRORS as exc:
            dispatch.lost(trip, exc, time.monotonic())
        else:
            dispatch.replied(trip, replies, time.monotonic())
        self._apply(dispatch.take_effects())

    def _apply(self, effects: list[Effect]) -> None:
        """Do what the dispatcher decided, in order."""
        beats = self._beats
        assert beats is not None
        observer = self._observer
        for effect in effects:
            if isinstance(effect, Line):
                self._line(effect.text, effect.ctx, **effect.fields)
            elif isinstance(effect, StopBeats):
                beats.discard(effect.job_ids)
            elif isinstance(effect, HoldBeats):
                beats.hold(effect.job_ids)
            elif isinstance(effect, StartBeats):
                beats.add_many(effect.ctxs, effect.interval)
            elif isinstance(effect, ResumeBeats):
                beats.resume(effect.job_ids)
            elif isinstance(effect, Report):
                if observer is not None:
                    report(observer, effect)
            elif isinstance(effect, Recovered):
                self._outage.recovered()
            elif isinstance(effect, Failing):
                self._outage.failed(effect.cause)
            elif isinstance(effect, Log):
                log.log(effect.level, effect.msg, *effect.args)
            else:
                self._release(effect)

    def _release(self, effect: Release) -> None:
        leases = [(c.job_id, c.lease_token) for c in effect.ctxs]
        try:
            self.client.release_many(self.queue, leases)
        except TRANSIENT_ERRORS as exc:
            if effect.isolating is not None:
                # Their leases expire and they come back (attempts burned) to run alone.
                log.warning("could not give back %d jobs reserved with job %s (%s)",
                            len(leases), effect.isolating.job_id, exc)  # fmt: skip
            else:
                log.warning("could not give back %d prefetched jobs; their leases will "
                            "expire and they will be retried", len(leases), exc_info=True)  # fmt: skip
        if effect.isolating is None and self._observer is not None:
            for ctx in effect.ctxs:
                self._observer.finished(ctx, "released")

    # ------------------------------------------------------------------ jobs

    def received(self, ctx: JobCtx) -> bool:
        """A handler is about to run ``ctx``: False if the consumer is closing and the job
        should be given back instead (called from worker threads too)."""
        if self._closing:
            return False
        if self._observer:
            self._observer.started(ctx)
        if self.verbose:
            self._line(received_line(ctx), ctx, gid=ctx.gid)
        return True

    def _run_inline(self, ctx: JobCtx) -> None:
        self.received(ctx)
        error, seconds, fatal = call_handler(self.handler, ctx, self._thread_loop, self.tracebacks)
        if fatal is not None and self._hard_exit:
            raise fatal  # our own Ctrl+C handler's: leave at once, nothing acked
        self._done.append((ctx, error, seconds))
        if fatal is not None:
            self.abort(fatal)

    def finished(self, ctx: JobCtx, error: Optional[str], seconds: float) -> None:
        """Called by a worker when a handler returned or raised (``seconds < 0``: the job
        was given back unstarted).

        Only the first completion since the dispatcher last looked wakes it: it then
        waits up to ``ack_delay_s`` for more, so a busy pool costs one dispatcher turn per
        batch of completions, not one per job.
        """
        done = self._done
        done.append((ctx, error, seconds))
        if len(done) == 1:
            self._event.set()

    def _collect(self) -> None:
        done, dispatch = self._done, self._dispatch
        if not done:
            return
        now = time.monotonic()
        while done:
            ctx, error, seconds = done.popleft()
            dispatch.finished(ctx, error, seconds, now)
        self._apply(dispatch.take_effects())

    def _finish(self) -> None:
        """Graceful end: flush the last acks, give back prefetched jobs never started."""
        self._collect()
        dispatch = self._dispatch
        # Acks that did not land are tried again, with backoff, for a bounded time.
        give_up = time.monotonic() + STOP_PATIENCE_S
        while dispatch.has_acks:
            wait = dispatch.finish_wait(time.monotonic(), give_up)
            if wait is None:
                break
            if wait > 0:
                time.sleep(wait)
            self._receive(self._send(dispatch.ack_trip(now_ms())))
        dispatch.give_back()
        self._apply(dispatch.take_effects())
        if self.stopping:
            self._line(f"stop requested; exiting (idle). queue={self.queue}")


def consume(
    client: "Client",
    *,
    queue: str,
    handler: Handler,
    **options: Any,
) -> ConsumerStats:
    """Consume ``queue`` with ``handler`` until stopped (see :class:`Consumer`).

    Options and defaults: ``poll_interval_s=0.05``, ``promote_interval_s=1.0``,
    ``promote_batch=1000``, ``reap_interval_s=1.0``, ``reap_batch=1000``,
    ``heartbeat_interval_s=None`` (a third of the job's lease, 50 ms-10 s), ``verbose=False``,
    ``logger=print`` (or a ``logging.Logger``), ``drain=True``, ``stop_on_ctrl_c=True``,
    ``max_jobs=None``, ``concurrency=1``, ``prefetch=None`` (adaptive, at most 64),
    ``ack_delay_s=0.002``, ``wake=True``, ``observer=None`` (told of every job's start and
    outcome: see :mod:`omniq_fast.observe`; :class:`omniq_fast.metrics.WorkerMetrics` is one),
    ``tracebacks=True`` (store the handler's traceback after the official
    ``"<Type>: <message>"`` line; False stores that line alone), ``burst=False`` (stop once
    a reserve made while nothing runs finds the queue empty or paused).
    """
    return Consumer(client, queue, handler, **options).run()
