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
* **Wake-ups**: an idle consumer waits on the queue's wake channel (omniq-fast producers
  publish to it), with ``poll_interval_s`` as the timeout, instead of polling hard.
"""

from __future__ import annotations

import inspect
import json
import logging
import signal
import threading
import time
from collections import deque
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .context import CheckCompletion, ConsumerStats, Exec, JobCtx
from .errors import TRANSIENT_ERRORS, ProtocolError, did_not_run
from .heartbeats import HeartbeatScheduler, default_heartbeat_interval
from .outage import Backoff, Outage
from .keys import queue_anchor, validate_queue_name
from .observe import ConsumerObserver, ObserverGuard
from .options import check_consumer_options
from .scripts import script
from .types import MalformedJob, Paused, ReservedJob
from .wake import WakeListener
from .workers import ThreadLoop, Workers, call_handler

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
]

log = logging.getLogger("omniq_fast.consumer")

_LOST = frozenset(("NOT_ACTIVE", "TOKEN_MISMATCH", "TOKEN_REQUIRED"))
#: Most jobs one reserve may prefetch (the batched script's limit).
MAX_PREFETCH = 1000
#: Prefetch bound unless ``prefetch=`` says otherwise. A process that dies (SIGKILL,
#: segfault, OOM kill) burns one attempt of every job it holds: its running jobs plus up
#: to this many prefetched ones. Reserves are pipelined with the acks, so a small bound
#: costs little throughput.
DEFAULT_PREFETCH = 64
#: How long a stopping consumer keeps retrying its last acks while the server is down.
STOP_PATIENCE_S = 10.0
#: Prefetch what the workers get through in this long, at the handler time seen so far.
_PREFETCH_HORIZON_S = 0.005
#: Verbose lines show this many characters of a payload, then its size.
SHOWN_PAYLOAD_CHARS = 200

Handler = Callable[[JobCtx], Any]
LineLogger = Union[Callable[[str], Any], logging.Logger]


def _is_async(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)
    )


class StopOnSignals:
    """Stop controls shared by :class:`Consumer` and the multi-queue consumer: SIGTERM
    stops gracefully; the first Ctrl+C drains (with ``drain``), the next one (or the
    first, without ``drain``) exits at once; ``verbose`` lines go to ``logger``."""

    queue: Any

    def _init_controls(
        self, verbose: bool, logger: LineLogger, drain: bool, stop_on_ctrl_c: bool
    ) -> None:
        self.verbose = verbose
        self.drain = drain
        self.stop_on_ctrl_c = stop_on_ctrl_c
        if isinstance(logger, logging.Logger):
            # Structured fields ride along as record attributes (for a JSON formatter).
            self._say: Callable[[str, dict[str, Any]], Any] = (
                lambda text, fields: logger.info(text, extra=fields)
            )
        else:
            self._say = lambda text, fields: logger(text)
        self._sigint_count = 0
        self._hard_exit = False  # our SIGINT handler raised KeyboardInterrupt to leave now

    def stop(self) -> None:
        raise NotImplementedError

    def _line(self, text: str, ctx: Optional[JobCtx] = None, **fields: Any) -> None:
        """A verbose line; with a ``logging.Logger`` its fields (``queue``, and for a job
        ``job_id``, ``attempt`` and what the caller adds) go in the record's ``extra``."""
        if self.verbose:
            fields["queue"] = self.queue
            if ctx is not None:
                fields["job_id"], fields["attempt"] = ctx.job_id, ctx.attempt
            self._say(f"[consume] {text}", fields)

    def _on_sigterm(self, signum: int, frame: Optional[FrameType]) -> None:
        self._line(f"SIGTERM received; stopping... queue={self.queue}")
        self.stop()

    def _on_sigint(self, signum: int, frame: Optional[FrameType]) -> None:
        self._sigint_count += 1
        if self.drain and self._sigint_count == 1:
            self._line("Ctrl+C received; draining current job then exiting.")
            self.stop()
            return
        self._line("SIGINT x2; hard exit now." if self.drain else "KeyboardInterrupt; exiting now.")
        self.stop()
        self._hard_exit = True
        raise KeyboardInterrupt

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # signal handlers can only be set from the main thread
        old_term = signal.signal(signal.SIGTERM, self._on_sigterm)
        old_int = signal.signal(signal.SIGINT, self._on_sigint) if self.stop_on_ctrl_c else None

        def restore() -> None:
            # None means the old handler was not set from Python; it cannot be put back.
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)

        return restore


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
        self.stats = ConsumerStats()
        self._observer = ObserverGuard(observer) if observer is not None else None
        self._init_controls(verbose, logger, drain, stop_on_ctrl_c)
        self._stop = threading.Event()
        self._event = threading.Event()  # anything the dispatcher should look at
        self._anchor = queue_anchor(queue)
        self._async = _is_async(handler)
        self._inline = concurrency == 1 and not self._async
        # Dispatcher state (touched only by the dispatcher, except _done).
        # Inline mode keeps prefetched jobs here; worker modes hand every reserved job to
        # the workers at once (they take the next when free), so _running counts those
        # waiting there too.
        self._ready: deque[JobCtx] = deque()
        self._running = 0
        self._taken = 0  # jobs handed to a handler (or to the workers) so far
        self._closing = False  # workers return jobs they have not started
        self._returned: list[JobCtx] = []  # prefetched jobs to give back at the end
        self._done: deque[tuple[JobCtx, Optional[str], float]] = deque()
        self._acks_ok: list[JobCtx] = []
        self._acks_fail: list[tuple[JobCtx, str]] = []
        self._resent: set[str] = set()  # ids whose ack is being sent again
        self._oldest_ack = 0.0
        self._handler_time: Optional[float] = None  # moving average of handler seconds
        self._got_jobs = False  # the last reserve handed out jobs
        self._dry_since: Optional[float] = None  # when a reserve last found nothing
        self._woken = False  # a wake message came since the last reserve
        self._paused = False  # the last reserve found the queue paused
        self._backoff = Backoff()
        self._outage = Outage(log, f"consumer of {queue}")
        self._retry_at: Optional[float] = None  # backing off after a failure until then
        self._held: dict[str, Any] = {}  # heartbeats of jobs whose acks are in flight
        # A job that ran before (attempt > 1: reaped after a crash, or retried) runs with
        # nothing else in this process, so that if it kills the process again it costs no
        # other job an attempt.
        self._isolated: Optional[JobCtx] = None
        self._cautious = False  # reserve one job at a time after running one in isolation
        self._nothing_handed = False  # the last reserve answered EMPTY or PAUSED
        self._took: dict[str, float] = {}  # handler seconds until the ack line (verbose)
        # A handler's SystemExit/KeyboardInterrupt/...: stop gracefully, then re-raise it.
        self._fatal: Optional[BaseException] = None
        self._thread_loop = ThreadLoop()  # inline handlers that return an awaitable

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
        self._woken = True
        self._event.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ run

    def run(self) -> ConsumerStats:
        """Consume until stopped; returns what was done.

        If a handler raised ``SystemExit``, ``KeyboardInterrupt`` or another
        ``BaseException`` that is not an ``Exception``, that job is failed, the consumer
        stops gracefully, and the exception is raised here afterwards."""
        restore = self._install_signals()
        self._beats = HeartbeatScheduler(self.client, self.queue)
        workers = Workers(self) if not self._inline else None
        listener = WakeListener(self) if self.wake else None
        graceful = False
        try:
            self._loop(workers)
            self._finish()
            graceful = True
        except KeyboardInterrupt:
            pass  # exit at once: unfinished jobs are not acked; their leases expire
        finally:
            if listener is not None:
                listener.close()
            if workers is not None:
                workers.close(graceful)
            self._thread_loop.close()
            self._beats.close()
            restore()
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    def _loop(self, workers: Optional[Workers]) -> None:
        next_promote = next_reap = 0.0
        while True:
            self._event.clear()
            self._collect()
            stopping = self._stop.is_set()
            if stopping:
                self._closing = True
                if self._running == 0:
                    return
            now = time.monotonic()
            calls: list[tuple[str, Any]] = []
            if not stopping and now >= next_promote:
                calls.append(("promote_delayed", None))
                next_promote = now + self.promote_interval_s
            if not stopping and now >= next_reap:
                calls.append(("reap_expired", None))
                next_reap = now + self.reap_interval_s
            want = 0 if stopping else self._want()
            if self._acks_ok or self._acks_fail:
                if want or stopping or now - self._oldest_ack >= self.ack_delay_s or (
                    self._running == 0 and (not self._ready or self._isolated is not None)
                ):
                    calls.append(("acks", None))
            if want:
                calls.append(("reserve", want))
            if self._retry_at is not None and now < self._retry_at:
                calls = []  # backing off: nothing goes out before the next try is due
            self._got_jobs = self._paused = self._nothing_handed = False
            if calls:
                self._round_trip(calls)
            if self._max_jobs_done() or (
                # Burst: a reserve sent while nothing ran had nothing to hand out.
                self.burst and self._nothing_handed and self._running == 0 and not self._ready
            ):
                self.stop()
                continue
            if workers is not None:
                while self._ready and not stopping and self._may_start():
                    self._running += 1
                    self._taken += 1
                    workers.submit(self._ready.popleft())
            elif self._ready and not stopping and self._may_start():
                self._run_inline(self._ready.popleft())
                continue
            self._event.wait(self._wait_time(now, next_promote, next_reap, stopping))

    def _may_start(self) -> bool:
        """The next ready job may start: always, unless it is the one to run alone; that
        one waits until nothing else runs and every finished job's ack has landed."""
        if self._isolated is None or self._ready[0] is not self._isolated:
            return True
        return self._running == 0 and not (self._acks_ok or self._acks_fail or self._held)

    def _max_jobs_done(self) -> bool:
        return (
            self.max_jobs is not None
            and self._taken >= self.max_jobs
            and self._running == 0
            and not (self._acks_ok or self._acks_fail)
        )

    def _want(self) -> int:
        """How many jobs to reserve now: at once when a worker is idle with nothing
        prefetched, else only once a quarter of the target (workers + prefetch) is free,
        so that reserves, and the acks that ride along, come in batches."""
        if self._isolated is not None:
            return 0  # nothing else in flight while it runs
        target = self.concurrency + self._prefetch_cap()
        room = target - len(self._ready) - self._running
        if self.max_jobs is not None:
            room = min(room, self.max_jobs - self._taken - len(self._ready))
        if room <= 0:
            return 0
        idle_worker = self._running < self.concurrency and not self._ready
        if not idle_worker and self._dry_since is not None:
            # The last reserve found the queue empty: while jobs are still in hand, ask
            # again only after a poll interval or a wake message, not after every job.
            if not self._woken and time.monotonic() - self._dry_since < self.poll_interval_s:
                return 0
        if idle_worker or room >= max(1, target // 4):
            self._woken = False
            return 1 if self._cautious else min(room, MAX_PREFETCH)
        return 0

    def _prefetch_cap(self) -> int:
        """Prefetch no more than the workers get through in a few milliseconds, judged by
        the handler time seen so far (nothing until one has been seen).

        A prefetched job waits in this process holding its lease, and for a grouped job a
        slot of its group that another consumer could use: so fast handlers get deep
        batches, slow ones (a few ms and up) none, and a job never waits long to start.
        """
        if self._handler_time is None:
            return 0
        per_job = max(self._handler_time, 1e-6)
        cap = int(self.concurrency * _PREFETCH_HORIZON_S / per_job)
        return max(0, min(cap, self.prefetch))

    def _wait_time(self, now: float, next_promote: float, next_reap: float, stopping: bool) -> float:
        """How long the dispatcher may sleep; completions, wake-ups and stop() cut it short."""
        if self._retry_at is not None:
            return max(0.0, self._retry_at - now)  # backing off after a failure
        if stopping:
            # Only a completion (which sets the event) has anything left for us to do;
            # the promote and reap times are not kept up while stopping.
            return self.poll_interval_s if self._acks_ok or self._acks_fail else 1.0
        if self._got_jobs:
            return 0.0  # the queue has work: go straight back for more if there is room
        timeout = min(next_promote, next_reap) - now
        if self._acks_ok or self._acks_fail:
            timeout = min(timeout, self.ack_delay_s)
        if self._paused:
            timeout = min(timeout, max(0.25, 10 * self.poll_interval_s))
        else:
            timeout = min(timeout, self.poll_interval_s)
        return max(0.0, timeout)

    # ------------------------------------------------------------------ round trips

    def _round_trip(self, calls: list[tuple[str, Any]]) -> None:
        client, core = self.client, self.client._core
        now_ms = client._now(0)
        encoded: list[tuple[Any, bytes]] = []
        plan: list[tuple[str, Any]] = []
        for kind, arg in calls:
            if kind == "promote_delayed" or kind == "reap_expired":
                s = script(kind)
                size = self.promote_batch if kind == "promote_delayed" else self.reap_batch
                encoded.append((s, core.encode_command(
                    (b"EVALSHA", s.sha, b"1", self._anchor, now_ms, size))))  # fmt: skip
                plan.append((kind, None))
            elif kind == "acks":
                # Finished jobs are heartbeated until their ack goes out: a long job run
                # inline after them must not let their leases expire. Their beats are
                # held, not dropped, until the ack is answered: one that did not run is
                # sent again, and the lease must live until then.
                ids = [c.job_id for c in self._acks_ok] + [c.job_id for c, _ in self._acks_fail]
                for lease in self._beats.take(*ids):
                    self._held[lease.ctx.job_id] = lease
                # A batched script takes at most 1000 jobs per call.
                for i in range(0, len(self._acks_ok), MAX_PREFETCH):
                    chunk = self._acks_ok[i : i + MAX_PREFETCH]
                    s = script("ack_success_batch")
                    data, _ = core.encode_lease_batch(
                        s.sha, self._anchor, now_ms,
                        [(c.job_id, c.lease_token) for c in chunk], None,
                    )  # fmt: skip
                    encoded.append((s, data))
                    plan.append(("ack_ok", chunk))
                for i in range(0, len(self._acks_fail), MAX_PREFETCH):
                    failed = self._acks_fail[i : i + MAX_PREFETCH]
                    s = script("ack_fail_batch")
                    data, _ = core.encode_lease_batch(
                        s.sha, self._anchor, now_ms,
                        [(c.job_id, c.lease_token) for c, _ in failed],
                        [msg for _, msg in failed],
                    )  # fmt: skip
                    encoded.append((s, data))
                    plan.append(("ack_fail", failed))
                self._acks_ok, self._acks_fail = [], []
            else:  # reserve
                s = script("reserve_batch")
                encoded.append((s, core.encode_command(
                    (b"EVALSHA", s.sha, b"1", self._anchor, now_ms, arg))))  # fmt: skip
                plan.append(("reserve", now_ms))
        try:
            replies = client._engine.run_many(self._anchor, encoded)
        except TRANSIENT_ERRORS as exc:
            # Acks in this round trip may or may not have landed. They are sent again with
            # the next round trip: an ack is gated by its lease token, so a second one is
            # refused if the first landed, and the job is not left to run again when its
            # lease expires. A reserve that may have run is not repeated; jobs it may have
            # leased come back when their leases expire.
            self._requeue_acks(plan)
            self._failing(exc)
            return
        trouble: Optional[Exception] = None
        for (kind, arg), reply in zip(plan, replies):
            if isinstance(reply, Exception) and did_not_run(reply):
                # Loading, busy, no script, slot moving...: the call changed nothing. Acks
                # go again (their jobs beaten meanwhile), the rest at the next turn.
                trouble = reply
                if kind in ("ack_ok", "ack_fail"):
                    self._requeue_acks([(kind, arg)], maybe_landed=False)
            elif isinstance(reply, Exception):
                # Not one we know changed nothing: do not repeat it blindly.
                trouble = reply
                log.warning("%s failed on %s: %s", kind, self.queue, reply)
                if kind in ("ack_ok", "ack_fail"):
                    self._unknown_acks([(kind, arg)])
            else:
                try:
                    self._answered(kind, arg, reply)
                except ProtocolError as exc:
                    # A reply we cannot read (not a bad job field: those are failed one by
                    # one): its effect is unknown. Acks go again (token-gated: a repeat of
                    # one that landed is refused and counted unknown); jobs an unread
                    # reserve leased come back when their leases expire.
                    trouble = exc
                    log.warning("unreadable %s reply on %s: %s", kind, self.queue, exc)
                    if kind in ("ack_ok", "ack_fail"):
                        self._requeue_acks([(kind, arg)])
        if trouble is not None:
            self._failing(trouble)
        else:
            self._backoff.reset()
            self._retry_at = None
            self._outage.recovered()

    def _answered(self, kind: str, arg: Any, reply: Any) -> None:
        core = self.client._core
        if kind == "ack_ok":
            self._acked(arg, core.parse_job_results(reply, [c.job_id for c in arg], 1))
        elif kind == "ack_fail":
            self._failed(arg, core.parse_job_results(reply, [c.job_id for c, _ in arg], 2))
        elif kind == "reserve":
            self._reserved(core.parse_reserve_batch_reply(reply), arg)

    def _failing(self, cause: BaseException) -> None:
        """Back off before the next round trip; the outage is logged once, not per try."""
        self._outage.failed(cause)
        self._retry_at = time.monotonic() + self._backoff.delay()

    def _reserved(self, jobs: Union[list[ReservedJob], Paused], reserved_at: int) -> None:
        if isinstance(jobs, Paused):
            self._paused = self._nothing_handed = True
            return
        if not jobs:
            self._dry_since = time.monotonic()
            self._nothing_handed = True
            return
        self._dry_since = None
        self._got_jobs = True
        loads = self.client._core.loads_payload
        by_interval: dict[float, list[JobCtx]] = {}
        for job in jobs:
            if isinstance(job, MalformedJob):
                self._malformed(job)
                continue
            ctx = JobCtx(
                queue=self.queue, job_id=job.job_id, payload_raw=job.payload,
                payload=loads(job.payload), attempt=job.attempt,
                max_attempts=job.max_attempts, lock_until_ms=job.lock_until_ms,
                lease_token=job.lease_token, exec=Exec(self.client, job.job_id), gid=job.gid,
            )  # fmt: skip
            # reserve's now was ours, so the lease length is exact without an HGET.
            interval = self.heartbeat_interval_s or default_heartbeat_interval(
                job.lock_until_ms - reserved_at
            )
            by_interval.setdefault(interval, []).append(ctx)
            self._ready.append(ctx)
        for interval, ctxs in by_interval.items():
            self._beats.add_many(ctxs, interval)
        if self._isolated is None:
            self._isolate()
        if all(job.attempt <= 1 for job in jobs):
            self._cautious = False

    def _isolate(self) -> None:
        """If a job that ran before was reserved, keep it alone: give back every job not
        yet started (they go back to the head of their lanes, attempts unburned)."""
        suspect = next((ctx for ctx in self._ready if ctx.attempt > 1), None)
        if suspect is None:
            return
        others = [ctx for ctx in self._ready if ctx is not suspect]
        self._isolated = suspect
        self._cautious = True
        self._ready = deque([suspect])
        if not others:
            return
        self._beats.discard(*(c.job_id for c in others))
        try:
            self.client.release_many(self.queue, [(c.job_id, c.lease_token) for c in others])
        except TRANSIENT_ERRORS as exc:
            # Their leases expire and they come back (attempts burned) to run alone.
            log.warning("could not give back %d jobs reserved with job %s (%s)",
                        len(others), suspect.job_id, exc)  # fmt: skip

    def _malformed(self, job: MalformedJob) -> None:
        """A leased job whose fields do not read runs no handler: it is acked failed with
        the problem (retried or failed by its attempts, like any failure)."""
        log.warning("job %s on %s is malformed (%s): failing it without running it",
                    job.job_id, self.queue, job.problem)  # fmt: skip
        ctx = JobCtx(
            queue=self.queue, job_id=job.job_id, payload_raw=job.payload, payload=job.payload,
            attempt=job.attempt, max_attempts=job.max_attempts,
            lock_until_ms=job.lock_until_ms, lease_token=job.lease_token,
            exec=Exec(self.client, job.job_id), gid=job.gid,
        )  # fmt: skip
        if not self._acks_ok and not self._acks_fail:
            self._oldest_ack = time.monotonic()
        self._acks_fail.append((ctx, f"MalformedJob: {job.problem}"))

    def _requeue_acks(self, plan: list[tuple[str, Any]], maybe_landed: bool = True) -> None:
        """Put the acks of a failed round trip back in front of any newer ones, their
        jobs heartbeated again until then."""
        ok = [ctx for kind, arg in plan if kind == "ack_ok" for ctx in arg]
        fail = [item for kind, arg in plan if kind == "ack_fail" for item in arg]
        if not ok and not fail:
            return
        ids = [ctx.job_id for ctx in ok] + [ctx.job_id for ctx, _ in fail]
        self._beats.put_back([self._held.pop(i) for i in ids if i in self._held])
        if maybe_landed:
            self._resent.update(ctx.job_id for ctx in ok)
            self._resent.update(ctx.job_id for ctx, _ in fail)
        if not self._acks_ok and not self._acks_fail:
            self._oldest_ack = time.monotonic()
        self._acks_ok = ok + self._acks_ok
        self._acks_fail = fail + self._acks_fail

    def _unknown_acks(self, plan: list[tuple[str, Any]]) -> None:
        """Acks answered with an error we cannot read: given up, outcome unknown."""
        for kind, arg in plan:
            for item in arg:
                ctx = item if kind == "ack_ok" else item[0]
                self._held.pop(ctx.job_id, None)
                self._resent.discard(ctx.job_id)
                self.stats.ack_unknown += 1
                if self._observer:
                    self._observer.unknown_outcome(ctx, "ack_success" if kind == "ack_ok" else "ack_fail")

    def _acked(self, ctxs: list[JobCtx], results: list[Any]) -> None:
        for ctx, result in zip(ctxs, results):
            self._held.pop(ctx.job_id, None)
            if result.status == "OK":
                self._resent.discard(ctx.job_id)
                self.stats.succeeded += 1
                if self._observer:
                    self._observer.finished(ctx, "completed")
                self._line(f"ack success job_id={ctx.job_id}", ctx, outcome="completed",
                           duration_ms=self._took_ms(ctx))  # fmt: skip
            else:
                self._refused(ctx, "ack_success", result.reason)

    def _failed(self, items: list[tuple[JobCtx, str]], results: list[Any]) -> None:
        for (ctx, message), result in zip(items, results):
            self._held.pop(ctx.job_id, None)
            if result.status == "ERR":
                self._refused(ctx, "ack_fail", result.reason)
                continue
            self._resent.discard(ctx.job_id)
            self.stats.failed += 1
            if self._observer:
                self._observer.fail_outcome(ctx, result.status)
            took = self._took_ms(ctx)
            if result.status == "RETRY":
                self._line(f"ack fail job_id={ctx.job_id} => RETRY due_ms={result.ms}", ctx,
                           outcome="retried", duration_ms=took)  # fmt: skip
            else:
                self._line(f"ack fail job_id={ctx.job_id} => FAILED", ctx, outcome="failed",
                           duration_ms=took)  # fmt: skip
            # The official line shows the error alone; a stored traceback stays in the job.
            self._line(f"error job_id={ctx.job_id} => {message.partition(chr(10))[0]}", ctx)

    def _refused(self, ctx: JobCtx, op: str, reason: Optional[str]) -> None:
        if ctx.job_id in self._resent:
            # Sent again after a lost connection: the first one most likely landed.
            self._resent.discard(ctx.job_id)
            self._took.pop(ctx.job_id, None)
            self.stats.ack_unknown += 1
            if self._observer:
                self._observer.unknown_outcome(ctx, op)
            log.info("%s re-sent for job %s was refused (%s): the first one landed, "
                     "or the lease ran out meanwhile", op, ctx.job_id, reason)  # fmt: skip
            return
        # The lease was taken between the last heartbeat and the ack.
        self._took.pop(ctx.job_id, None)
        ctx.lease_lost = True
        self.stats.lease_lost += 1
        if self._observer:
            self._observer.finished(ctx, "lease_lost")
        log.warning("%s refused for job %s: %s", op, ctx.job_id, reason)

    # ------------------------------------------------------------------ jobs

    def received(self, ctx: JobCtx) -> bool:
        """A handler is about to run ``ctx``: False if the consumer is closing and the job
        should be given back instead (called from worker threads too)."""
        if self._closing:
            return False
        if self._observer:
            self._observer.started(ctx)
        if self.verbose:
            # Non-ASCII text as is, like the official SDK's line (not "\u00e9").
            shown = (
                ctx.payload
                if isinstance(ctx.payload, str)
                else json.dumps(ctx.payload, ensure_ascii=False)
            )
            if len(shown) > SHOWN_PAYLOAD_CHARS:
                size = len(ctx.payload_raw.encode())
                shown = f"{shown[:SHOWN_PAYLOAD_CHARS]}… ({size} bytes)"
            self._line(
                f"received job_id={ctx.job_id} attempt={ctx.attempt} "
                f"gid={ctx.gid or '-'} payload={shown}", ctx, gid=ctx.gid,
            )  # fmt: skip
        return True

    def _run_inline(self, ctx: JobCtx) -> None:
        self._running += 1
        self._taken += 1
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
        done = self._done
        while done:
            ctx, error, seconds = done.popleft()
            self._running -= 1
            if seconds < 0:
                if ctx is self._isolated:
                    self._isolated = None
                self._returned.append(ctx)
                continue
            self.stats.handled += 1
            if self._observer:
                self._observer.handled(ctx, seconds)
            if self.verbose:
                self._took[ctx.job_id] = seconds
            if self._handler_time is None:
                self._handler_time = seconds
            else:
                self._handler_time += (seconds - self._handler_time) * 0.1
            if ctx is self._isolated:
                self._isolated = None  # its ack rides with the next (one-job) reserve
            if ctx.lease_lost:
                self._beats.discard(ctx.job_id)
                self.stats.lease_lost += 1
                if self._observer:
                    self._observer.finished(ctx, "lease_lost")
                self._line(f"lease lost job_id={ctx.job_id}; not acked", ctx,
                           outcome="lease_lost", duration_ms=self._took_ms(ctx))  # fmt: skip
                continue
            if not self._acks_ok and not self._acks_fail:
                self._oldest_ack = time.monotonic()
            if error is None:
                self._acks_ok.append(ctx)
            else:
                self._acks_fail.append((ctx, error))

    def _took_ms(self, ctx: JobCtx) -> Optional[float]:
        seconds = self._took.pop(ctx.job_id, None)
        return None if seconds is None else round(seconds * 1000, 3)

    def _finish(self) -> None:
        """Graceful end: flush the last acks, give back prefetched jobs never started."""
        self._collect()
        # Acks that did not land are tried again, with backoff, for a bounded time.
        give_up = time.monotonic() + STOP_PATIENCE_S
        while self._acks_ok or self._acks_fail:
            wait = 0.0 if self._retry_at is None else self._retry_at - time.monotonic()
            if time.monotonic() + wait > give_up:
                log.warning("stopping without acking %d finished jobs on %s: the server did "
                            "not answer for %.0f s; they will run again once their leases "
                            "expire", len(self._acks_ok) + len(self._acks_fail),
                            self.queue, STOP_PATIENCE_S)  # fmt: skip
                break
            if wait > 0:
                time.sleep(wait)
            self._round_trip([("acks", None)])
        leases = self._returned + list(self._ready)
        self._returned, self._ready = [], deque()
        if leases:
            for ctx in leases:
                self._beats.discard(ctx.job_id)
            try:
                self.client.release_many(self.queue, [(c.job_id, c.lease_token) for c in leases])
            except TRANSIENT_ERRORS:
                log.warning("could not give back %d prefetched jobs; their leases will "
                            "expire and they will be retried", len(leases), exc_info=True)  # fmt: skip
            if self._observer:
                for ctx in leases:
                    self._observer.finished(ctx, "released")
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
