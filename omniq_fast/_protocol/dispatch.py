"""The consumer's decisions: how many jobs to reserve, when acks go out, what a reply means.

Pure, as the rest of :mod:`omniq_fast._protocol`: no socket, thread, task or clock. ``now``
(monotonic seconds) and ``now_ms`` (the wall clock the scripts expect) are arguments; a
delay is a return value; what is to be done besides the round trip itself (beat leases,
give jobs back, log, tell the observer) is an :mod:`effect <omniq_fast._protocol.effects>`
the shell applies. :class:`~omniq_fast.Consumer` (threads) and
:class:`~omniq_fast.AsyncConsumer` (tasks) drive one :class:`Dispatcher` each the same way::

    dispatcher.finished(ctx, error, seconds, now)   # for each handler that ended
    trip = dispatcher.plan(now, now_ms, stopping)    # promote, reap, acks, reserve
    if trip: dispatcher.replied(trip, replies, now) or dispatcher.lost(trip, exc, now)
    apply(dispatcher.take_effects())
    while (ctx := dispatcher.next_job(stopping)): run ctx
    sleep dispatcher.wait_time(now, stopping), cut short by completions and wake-ups

Semantics follow PROTOCOL.md §6: a handler that returns is acked completed, one that
raises is acked failed with its text (retried until ``max_attempts``); a lease lost while
the handler ran is never acked.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional, Union

from .._context import ConsumerStats, JobCtx
from ..errors import ProtocolError, did_not_run
from ..keys import queue_anchor
from .._scripts import Script, script
from ..types import JobResult, MalformedJob, Paused, ReservedJob
from . import calls
from .backoff import Backoff
from .idle import Change, IdleTimers
from .effects import (
    Effect, Failing, HoldBeats, Line, Log, Recovered, Release, Report, ResumeBeats,
    StartBeats, StopBeats,
)  # fmt: skip
from .leases import default_heartbeat_interval

__all__ = [
    "Dispatcher", "Trip", "MAX_PREFETCH", "DEFAULT_PREFETCH", "STOP_PATIENCE_S",
    "PREFETCH_HORIZON_S", "AHEAD",
]  # fmt: skip

#: Most jobs one reserve may prefetch, and most acks per batched call (the scripts' limit).
MAX_PREFETCH = calls.MAX_SCRIPT_BATCH
#: Prefetch bound unless ``prefetch=`` says otherwise. A process that dies (SIGKILL,
#: segfault, OOM kill) burns one attempt of every job it holds: its running jobs plus up
#: to this many prefetched ones. Reserves are pipelined with the acks, so a small bound
#: costs little throughput.
DEFAULT_PREFETCH = 64
#: How long a stopping consumer keeps retrying its last acks while the server is down.
STOP_PATIENCE_S = 10.0
#: Prefetch what the workers get through in this long, at the handler time seen so far.
PREFETCH_HORIZON_S = 0.005
#: Most trips on the wire at once for a shell that runs ready jobs meanwhile
#: (``plan(..., ahead=True)``): with two, the server has the next trip queued when it
#: answers one, and works while the client reads that answer and runs the jobs it brought.
AHEAD = 2

Acks = list[JobCtx]
FailAcks = list[tuple[JobCtx, str]]

@dataclass(frozen=True)
class Trip:
    """One round trip: the script calls to send to ``anchor``, in order, what each one
    is, and how many jobs its reserve asks for (0: none)."""

    anchor: str
    calls: list[tuple[Script, bytes]]
    steps: list[tuple[str, Any]]
    asked: int = 0


class Dispatcher:
    """The state and choices of one queue's consumer (touched by one thread or task)."""

    def __init__(
        self,
        core: ModuleType,
        queue: str,
        new_exec: Callable[[str], Any],
        *,
        concurrency: int,
        prefetch: int,
        max_jobs: Optional[int],
        poll_interval_s: float,
        promote_interval_s: float,
        promote_batch: int,
        reap_interval_s: float,
        reap_batch: int,
        heartbeat_interval_s: Optional[float],
        ack_delay_s: float,
        burst: bool,
        verbose: bool,
        observed: bool,
    ) -> None:
        self._core = core
        self.queue = queue
        self._anchor = queue_anchor(queue)
        self._new_exec = new_exec
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.max_jobs = max_jobs
        self.poll_interval_s = poll_interval_s
        self.promote_interval_s = promote_interval_s
        self.promote_batch = promote_batch
        self.reap_interval_s = reap_interval_s
        self.reap_batch = reap_batch
        self.heartbeat_interval_s = heartbeat_interval_s
        self.ack_delay_s = ack_delay_s
        self.burst = burst
        self.verbose = verbose
        self.observed = observed
        self.stats = ConsumerStats()
        self._effects: list[Effect] = []
        # Prefetched jobs not yet handed to a handler; handed ones (waiting in a worker
        # pool included) count in running.
        self.ready: deque[JobCtx] = deque()
        self.running = 0
        self.taken = 0  # jobs handed to a handler so far
        self._returned: list[JobCtx] = []  # handed back unstarted: to give back at the end
        self._acks_ok: Acks = []
        self._acks_fail: FailAcks = []
        self._resent: set[str] = set()  # ids whose ack is being sent again
        self._held: set[str] = set()  # ids whose ack is in flight (their beats held)
        self._oldest_ack = 0.0
        self._handler_time: Optional[float] = None  # moving average of handler seconds
        self._got_jobs = False  # the last reserve handed out jobs
        self._dry_since: Optional[float] = None  # when a reserve last found nothing
        self.woken = False  # a wake message came since the last reserve
        self._paused = False  # the last reserve found the queue paused
        self._nothing_handed = False  # the last reserve answered EMPTY or PAUSED
        self._backoff = Backoff()
        self.retry_at: Optional[float] = None  # backing off after a failure until then
        # When to promote, reap, read the server's next due times and poll again: fixed
        # intervals, or (told of every change by key tracking) when the server says.
        self.timers = IdleTimers(poll_interval_s, promote_interval_s, reap_interval_s)
        self._quiet_since: Optional[float] = None  # the last reserve found nothing / paused
        self._quiet_paused = False
        # A job that ran before (attempt > 1: reaped after a crash, or retried) runs with
        # nothing else in this process, so that if it kills the process again it costs no
        # other job an attempt.
        self._isolated: Optional[JobCtx] = None
        self._cautious = False  # reserve one job at a time after running one in isolation
        self._took: dict[str, float] = {}  # handler seconds until the ack line (verbose)
        # Trips planned and not yet answered (replied or lost), oldest first: a shell that
        # runs ready jobs while they are on the wire plans up to AHEAD of them, answered
        # in order; the jobs their reserves ask for count as coming.
        self.flights: deque[Trip] = deque()
        self._coming = 0

    # ------------------------------------------------------------------ effects

    def take_effects(self) -> list[Effect]:
        """What the shell must now do, in order (and forget)."""
        effects, self._effects = self._effects, []
        return effects

    def _line(self, text: str, ctx: Optional[JobCtx] = None, **fields: Any) -> None:
        if self.verbose:
            self._effects.append(Line(text, ctx, fields))

    def _report(self, ctx: JobCtx, kind: str, arg: Any) -> None:
        if self.observed:
            self._effects.append(Report(ctx, kind, arg))

    @property
    def in_hand(self) -> int:
        """Jobs reserved and not started that no worker is free for: what a shell runs
        while trips are on the wire (ready ones, and those handed to a busy pool: an
        asyncio queue counts its jobs as running)."""
        return len(self.ready) + max(0, self.running - self.concurrency)

    def runs_meanwhile(self, stopping: bool) -> bool:
        """Whether the shell has jobs to run while a trip is on the wire: then a trip just
        planned may stay unanswered (with ``plan(..., ahead=True)``); else the shell reads
        its replies at once, having nothing else to do."""
        return bool(self.in_hand) and not stopping

    @property
    def has_acks(self) -> bool:
        return bool(self._acks_ok or self._acks_fail)

    # ------------------------------------------------------------------ handlers

    def told(self, change: Change) -> None:
        """The server told the shell's listener of writes to the queue's tracked keys:
        re-read the next due times they moved, reserve if a job may be reservable."""
        if change.due:
            self.timers.due_stale = True
        if change.leases:
            self.timers.leases_stale = True
        if change.reservable:
            self.woken = True

    def finished(self, ctx: JobCtx, error: Optional[str], seconds: float, now: float) -> None:
        """A handler returned (``error`` None) or raised, after ``seconds``;
        ``seconds < 0``: the job was handed back unstarted (the consumer is closing)."""
        self.running -= 1
        if seconds < 0:
            if ctx is self._isolated:
                self._isolated = None
            self._returned.append(ctx)
            return
        self.stats.handled += 1
        self._report(ctx, "handled", seconds)
        if self.verbose:
            self._took[ctx.job_id] = seconds
        if self._handler_time is None:
            self._handler_time = seconds
        else:
            self._handler_time += (seconds - self._handler_time) * 0.1
        if ctx is self._isolated:
            self._isolated = None  # its ack rides with the next (one-job) reserve
        if ctx.lease_lost:
            self._effects.append(StopBeats([ctx.job_id]))
            self.stats.lease_lost += 1
            self._report(ctx, "finished", "lease_lost")
            self._line(f"lease lost job_id={ctx.job_id}; not acked", ctx,
                       outcome="lease_lost", duration_ms=self._took_ms(ctx))  # fmt: skip
            return
        if not self._acks_ok and not self._acks_fail:
            self._oldest_ack = now
        if error is None:
            self._acks_ok.append(ctx)
        else:
            self._acks_fail.append((ctx, error))

    def next_job(self, stopping: bool) -> Optional[JobCtx]:
        """The next ready job to hand to a handler now, if any may start (it then counts
        as running)."""
        if not self.ready or stopping or not self._may_start():
            return None
        self.running += 1
        self.taken += 1
        return self.ready.popleft()

    def _may_start(self) -> bool:
        """The next ready job may start: always, unless it is the one to run alone; that
        one waits until nothing else runs and every finished job's ack has landed."""
        if self._isolated is None or self.ready[0] is not self._isolated:
            return True
        return self.running == 0 and not (self._acks_ok or self._acks_fail or self._held)

    def should_stop(self) -> bool:
        """``max_jobs`` reached with every ack answered, or (``burst``) a reserve sent
        while nothing ran had nothing to hand out."""
        if self.flights:
            return False  # their acks are not answered yet, their reserves may bring jobs
        if (
            self.max_jobs is not None
            and self.taken >= self.max_jobs
            and self.running == 0
            and not (self._acks_ok or self._acks_fail)
        ):
            return True
        return self.burst and self._nothing_handed and self.running == 0 and not self.ready

    # ------------------------------------------------------------------ what to send

    def plan(self, now: float, now_ms: int, stopping: bool, ahead: bool = False) -> Optional[Trip]:
        """The round trip to make now, if any: promote and reap when due, acks when a
        reserve goes out or they waited ``ack_delay_s``, a reserve when there is room.
        Nothing goes out while backing off after a failure.

        One trip at a time is answered before the next is planned, unless ``ahead``: the
        shell can leave trips on the wire while it runs the jobs in hand, so while there
        are some (:attr:`in_hand`), up to :data:`AHEAD` trips may be unanswered (with
        none, the shell has to wait for the oldest anyway)."""
        if self.flights and not (
            ahead and self.runs_meanwhile(stopping) and len(self.flights) < AHEAD
        ):
            return None
        timers = self.timers
        holding = self.running > 0 or bool(self.ready) or bool(self._acks_ok or self._acks_fail)
        kinds = [] if stopping else timers.due(now, holding)
        want = 0 if stopping else self._want(now)
        if self._acks_ok or self._acks_fail:
            if want or stopping or now - self._oldest_ack >= self.ack_delay_s or (
                self.running == 0 and (not self.ready or self._isolated is not None)
            ):
                kinds.append("acks")
        if self.retry_at is not None and now < self.retry_at:
            kinds, want = [], 0  # backing off: nothing goes out before the next try is due
        # After the reserve, so the times read include a lease it takes.
        read = not stopping and not (self.retry_at is not None and now < self.retry_at) and (
            timers.wants_read(now)
        )
        self._got_jobs = self._paused = self._nothing_handed = False
        if not kinds and not want and not read:
            return None
        trip = Trip(self._anchor, [], [], want)
        for kind in kinds:
            if kind == "acks":
                self._add_acks(trip, now_ms)
            else:
                size = self.promote_batch if kind == "promote_delayed" else self.reap_batch
                s = script(kind)
                trip.calls.append((s, calls.evalsha(self._core, s, self._anchor, now_ms, size)))
                trip.steps.append((kind, None))
        if want:
            s = script("reserve_batch")
            trip.calls.append((s, calls.evalsha(self._core, s, self._anchor, now_ms, want)))
            trip.steps.append(("reserve", now_ms))
        if read:
            s = script("next_due")
            trip.calls.append((s, calls.evalsha(self._core, s, self._anchor)))
            trip.steps.append(("next_due", now_ms))
        self.flights.append(trip)
        self._coming += want
        return trip

    def ack_trip(self, now_ms: int) -> Trip:
        """A round trip of the pending acks alone (the last ones, at stop)."""
        trip = Trip(self._anchor, [], [])
        self._add_acks(trip, now_ms)
        self.flights.append(trip)
        return trip

    def _add_acks(self, trip: Trip, now_ms: int) -> None:
        # Finished jobs are heartbeated until their ack goes out: a long job run inline
        # after them must not let their leases expire. Their beats are held, not dropped,
        # until the ack is answered: one that did not run is sent again, and the lease
        # must live until then.
        ok, fail = self._acks_ok, self._acks_fail
        self._acks_ok, self._acks_fail = [], []
        ids = [c.job_id for c in ok] + [c.job_id for c, _ in fail]
        self._held.update(ids)
        self._effects.append(HoldBeats(ids))
        encode = self._core.encode_lease_batch
        for i in range(0, len(ok), MAX_PREFETCH):
            chunk = ok[i : i + MAX_PREFETCH]
            s = script("ack_success_batch")
            data, _ = encode(s.sha, self._anchor, now_ms, [(c.job_id, c.lease_token) for c in chunk], None)
            trip.calls.append((s, data))
            trip.steps.append(("ack_ok", chunk))
        for i in range(0, len(fail), MAX_PREFETCH):
            failed = fail[i : i + MAX_PREFETCH]
            s = script("ack_fail_batch")
            data, _ = encode(
                s.sha, self._anchor, now_ms,
                [(c.job_id, c.lease_token) for c, _ in failed], [msg for _, msg in failed],
            )  # fmt: skip
            trip.calls.append((s, data))
            trip.steps.append(("ack_fail", failed))

    def _want(self, now: float) -> int:
        """How many jobs to reserve now: at once when a worker is idle with nothing
        prefetched, else only once a quarter of the target (workers + prefetch) is free,
        so that reserves, and the acks that ride along, come in batches."""
        if self._isolated is not None:
            return 0  # nothing else in flight while it runs
        target = self.concurrency + self._prefetch_cap()
        room = target - len(self.ready) - self.running - self._coming
        if self.max_jobs is not None:
            room = min(room, self.max_jobs - self.taken - len(self.ready))
        if room <= 0:
            return 0
        idle_worker = self.running < self.concurrency and not self.ready and not self._coming
        if not idle_worker and self._dry_since is not None:
            # The last reserve found the queue empty: while jobs are still in hand, ask
            # again only after a poll interval or a wake message, not after every job.
            if not self.woken and now - self._dry_since < self.timers.poll_gap(False):
                return 0
        if idle_worker and self.timers.tracking and self._quiet_since is not None and (
            not self.burst
        ):
            # Told of every write that makes a job reservable: an idle consumer reserves
            # when woken, and polls only as a safety net. Not a burst consumer: the
            # reserve that finds nothing with nothing in hand is the one that ends it.
            if not self.woken and now - self._quiet_since < self.timers.poll_gap(
                self._quiet_paused
            ):
                return 0
        if idle_worker or room >= max(1, target // 4):
            self.woken = False
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
        cap = int(self.concurrency * PREFETCH_HORIZON_S / per_job)
        return max(0, min(cap, self.prefetch))

    def wait_time(self, now: float, stopping: bool) -> float:
        """How long the shell may sleep; completions, wake-ups and stop() cut it short."""
        if self.retry_at is not None:
            return max(0.0, self.retry_at - now)  # backing off after a failure
        if stopping:
            # Only a completion (which wakes the shell) has anything left for us to do;
            # the promote and reap times are not kept up while stopping.
            return self.poll_interval_s if self._acks_ok or self._acks_fail else 1.0
        if self._got_jobs:
            return 0.0  # the queue has work: go straight back for more if there is room
        timers = self.timers
        timeout = timers.next_at(now) - now
        if self._acks_ok or self._acks_fail:
            timeout = min(timeout, self.ack_delay_s)
        if timers.tracking and self._quiet_since is not None:
            poll_at = self._quiet_since + timers.poll_gap(self._quiet_paused)
            timeout = min(timeout, poll_at - now)
        else:
            timeout = min(timeout, timers.poll_gap(self._paused))
        return max(0.0, timeout)

    # ------------------------------------------------------------------ what came back

    def lost(self, trip: Trip, cause: BaseException, now: float) -> None:
        """The round trip failed on the way (a lost connection, a timeout).

        Acks in it may or may not have landed. They are sent again with the next round
        trip: an ack is gated by its lease token, so a second one is refused if the first
        landed, and the job is not left to run again when its lease expires. A reserve
        that may have run is not repeated; jobs it may have leased come back when their
        leases expire."""
        self._landed(trip)
        self._requeue_acks(trip.steps, now)
        if any(kind == "next_due" for kind, _ in trip.steps):
            self.timers.lost()
        self._failing(cause, now)

    def replied(self, trip: Trip, replies: list[Any], now: float) -> None:
        """Read the replies of ``trip``, in order (error replies as exception values)."""
        self._landed(trip)
        trouble: Optional[BaseException] = None
        for (kind, arg), reply in zip(trip.steps, replies):
            is_ack = kind in ("ack_ok", "ack_fail")
            if kind == "next_due" and isinstance(reply, Exception):
                self.timers.lost()  # a read: ask again at the next turn
            if isinstance(reply, Exception) and did_not_run(reply):
                # Loading, busy, no script, slot moving...: the call changed nothing. Acks
                # go again (their jobs beaten meanwhile), the rest at the next turn.
                trouble = reply
                if is_ack:
                    self._requeue_acks([(kind, arg)], now, maybe_landed=False)
            elif isinstance(reply, Exception):
                # Not one we know changed nothing: do not repeat it blindly.
                trouble = reply
                self._log(logging.WARNING, "%s failed on %s: %s", kind, self.queue, reply)
                if is_ack:
                    self._unknown_acks([(kind, arg)])
            else:
                try:
                    self._answered(kind, arg, reply, now)
                except ProtocolError as exc:
                    # A reply we cannot read (not a bad job field: those are failed one by
                    # one): its effect is unknown. Acks go again (token-gated: a repeat of
                    # one that landed is refused and counted unknown); jobs an unread
                    # reserve leased come back when their leases expire.
                    trouble = exc
                    self._log(logging.WARNING, "unreadable %s reply on %s: %s", kind,
                              self.queue, exc)  # fmt: skip
                    if is_ack:
                        self._requeue_acks([(kind, arg)], now)
        if trouble is not None:
            self._failing(trouble, now)
        else:
            self._backoff.reset()
            self.retry_at = None
            self._effects.append(Recovered())

    def _landed(self, trip: Trip) -> None:
        """``trip``, the oldest unanswered one, is answered (replied or lost)."""
        assert self.flights and self.flights[0] is trip, "trips are answered in order"
        self.flights.popleft()
        self._coming -= trip.asked

    def _log(self, level: int, msg: str, *args: Any) -> None:
        self._effects.append(Log(level, msg, args))

    def _failing(self, cause: BaseException, now: float) -> None:
        """Back off before the next round trip."""
        self._effects.append(Failing(cause))
        self.retry_at = now + self._backoff.delay()

    def _answered(self, kind: str, arg: Any, reply: Any, now: float) -> None:
        core = self._core
        if kind == "ack_ok":
            self._acked(arg, core.parse_job_results(reply, [c.job_id for c in arg], 1))
        elif kind == "ack_fail":
            self._failed(arg, core.parse_job_results(reply, [c.job_id for c, _ in arg], 2))
        elif kind == "reserve":
            self._reserved(core.parse_reserve_batch_reply(reply), arg, now)
        elif kind == "next_due":
            self.timers.read(reply, arg, now)

    def _reserved(
        self, jobs: Union[list[ReservedJob], Paused], reserved_at: int, now: float
    ) -> None:
        if isinstance(jobs, Paused):
            self._paused = self._nothing_handed = True
            self._quiet_since, self._quiet_paused = now, True
            return
        if not jobs:
            self._dry_since = now
            self._nothing_handed = True
            self._quiet_since, self._quiet_paused = now, False
            return
        self._dry_since = self._quiet_since = None
        self._got_jobs = True
        loads = self._core.loads_payload
        by_interval: dict[float, list[JobCtx]] = {}
        earliest = min(job.lock_until_ms for job in jobs)
        self.timers.leased((earliest - reserved_at) / 1000, now)
        for job in jobs:
            if isinstance(job, MalformedJob):
                self._malformed(job, now)
                continue
            ctx = JobCtx(
                queue=self.queue, job_id=job.job_id, payload_raw=job.payload,
                payload=loads(job.payload), attempt=job.attempt,
                max_attempts=job.max_attempts, lock_until_ms=job.lock_until_ms,
                lease_token=job.lease_token, exec=self._new_exec(job.job_id), gid=job.gid,
            )  # fmt: skip
            # reserve's now was ours, so the lease length is exact without an HGET.
            interval = self.heartbeat_interval_s or default_heartbeat_interval(
                job.lock_until_ms - reserved_at
            )
            by_interval.setdefault(interval, []).append(ctx)
            self.ready.append(ctx)
        for interval, ctxs in by_interval.items():
            self._effects.append(StartBeats(ctxs, interval))
        if self._isolated is None:
            self._isolate()
        else:
            # A trip planned before the job to run alone came in brought these: it must
            # still run with nothing else in this process, so they go back too.
            self._give_back_all_but(self._isolated)
        if all(job.attempt <= 1 for job in jobs):
            self._cautious = False

    def _isolate(self) -> None:
        """If a job that ran before was reserved, keep it alone: give back every job not
        yet started (they go back to the head of their lanes, attempts unburned)."""
        suspect = next((ctx for ctx in self.ready if ctx.attempt > 1), None)
        if suspect is None:
            return
        self._isolated = suspect
        self._cautious = True
        self._give_back_all_but(suspect)

    def _give_back_all_but(self, suspect: JobCtx) -> None:
        """Give back every job not yet started but ``suspect`` (ready, or running)."""
        waiting = any(ctx is suspect for ctx in self.ready)
        others = [ctx for ctx in self.ready if ctx is not suspect]
        self.ready = deque([suspect] if waiting else [])
        if others:
            self._effects.append(StopBeats([c.job_id for c in others]))
            self._effects.append(Release(others, isolating=suspect))

    def _malformed(self, job: MalformedJob, now: float) -> None:
        """A leased job whose fields do not read runs no handler: it is acked failed with
        the problem (retried or failed by its attempts, like any failure)."""
        self._log(logging.WARNING, "job %s on %s is malformed (%s): failing it without "
                  "running it", job.job_id, self.queue, job.problem)  # fmt: skip
        ctx = JobCtx(
            queue=self.queue, job_id=job.job_id, payload_raw=job.payload, payload=job.payload,
            attempt=job.attempt, max_attempts=job.max_attempts,
            lock_until_ms=job.lock_until_ms, lease_token=job.lease_token,
            exec=self._new_exec(job.job_id), gid=job.gid,
        )  # fmt: skip
        if not self._acks_ok and not self._acks_fail:
            self._oldest_ack = now
        self._acks_fail.append((ctx, f"MalformedJob: {job.problem}"))

    def _requeue_acks(
        self, steps: list[tuple[str, Any]], now: float, maybe_landed: bool = True
    ) -> None:
        """Put the acks of a failed round trip back in front of any newer ones, their
        jobs heartbeated again until then."""
        ok: Acks = [ctx for kind, arg in steps if kind == "ack_ok" for ctx in arg]
        fail: FailAcks = [item for kind, arg in steps if kind == "ack_fail" for item in arg]
        if not ok and not fail:
            return
        ids = [ctx.job_id for ctx in ok] + [ctx.job_id for ctx, _ in fail]
        self._held.difference_update(ids)
        self._effects.append(ResumeBeats(ids))
        if maybe_landed:
            self._resent.update(ids)
        if not self._acks_ok and not self._acks_fail:
            self._oldest_ack = now
        self._acks_ok = ok + self._acks_ok
        self._acks_fail = fail + self._acks_fail

    def _unknown_acks(self, steps: list[tuple[str, Any]]) -> None:
        """Acks answered with an error we cannot read: given up, outcome unknown."""
        for kind, arg in steps:
            ids = []
            for item in arg:
                ctx = item if kind == "ack_ok" else item[0]
                ids.append(ctx.job_id)
                self._held.discard(ctx.job_id)
                self._resent.discard(ctx.job_id)
                self.stats.ack_unknown += 1
                self._report(ctx, "unknown", "ack_success" if kind == "ack_ok" else "ack_fail")
            self._effects.append(StopBeats(ids))

    def _acked(self, ctxs: Acks, results: list[JobResult]) -> None:
        self._effects.append(StopBeats([ctx.job_id for ctx in ctxs]))
        for ctx, result in zip(ctxs, results):
            self._held.discard(ctx.job_id)
            if result.status == "OK":
                self._resent.discard(ctx.job_id)
                self.stats.succeeded += 1
                self._report(ctx, "finished", "completed")
                self._line(f"ack success job_id={ctx.job_id}", ctx, outcome="completed",
                           duration_ms=self._took_ms(ctx))  # fmt: skip
            else:
                self._refused(ctx, "ack_success", result.reason)

    def _failed(self, items: FailAcks, results: list[JobResult]) -> None:
        self._effects.append(StopBeats([ctx.job_id for ctx, _ in items]))
        for (ctx, message), result in zip(items, results):
            self._held.discard(ctx.job_id)
            if result.status == "ERR":
                self._refused(ctx, "ack_fail", result.reason)
                continue
            self._resent.discard(ctx.job_id)
            self.stats.failed += 1
            self._report(ctx, "fail", result.status)
            if self.verbose:
                took = self._took_ms(ctx)
                if result.status == "RETRY":
                    self._line(f"ack fail job_id={ctx.job_id} => RETRY due_ms={result.ms}",
                               ctx, outcome="retried", duration_ms=took)  # fmt: skip
                else:
                    self._line(f"ack fail job_id={ctx.job_id} => FAILED", ctx,
                               outcome="failed", duration_ms=took)  # fmt: skip
                # The official line shows the error alone; a stored traceback stays in the job.
                self._line(f"error job_id={ctx.job_id} => {message.partition(chr(10))[0]}", ctx)

    def _refused(self, ctx: JobCtx, op: str, reason: Optional[str]) -> None:
        self._took.pop(ctx.job_id, None)
        if ctx.job_id in self._resent:
            # Sent again after a lost connection: the first one most likely landed.
            self._resent.discard(ctx.job_id)
            self.stats.ack_unknown += 1
            self._report(ctx, "unknown", op)
            self._log(logging.INFO, "%s re-sent for job %s was refused (%s): the first one "
                      "landed, or the lease ran out meanwhile", op, ctx.job_id, reason)  # fmt: skip
            return
        # The lease was taken between the last heartbeat and the ack.
        ctx.lease_lost = True
        self.stats.lease_lost += 1
        self._report(ctx, "finished", "lease_lost")
        self._log(logging.WARNING, "%s refused for job %s: %s", op, ctx.job_id, reason)

    def _took_ms(self, ctx: JobCtx) -> Optional[float]:
        seconds = self._took.pop(ctx.job_id, None)
        return None if seconds is None else round(seconds * 1000, 3)

    # ------------------------------------------------------------------ the end

    def finish_wait(self, now: float, give_up: float) -> Optional[float]:
        """Stopping with acks still to send: how long to wait before sending them (the
        backoff after a failure), or None to give up (the server did not answer in time;
        their jobs run again once their leases expire)."""
        wait = 0.0 if self.retry_at is None else self.retry_at - now
        if now + wait > give_up:
            self._log(logging.WARNING, "stopping without acking %d finished jobs on %s: the "
                      "server did not answer for %.0f s; they will run again once their "
                      "leases expire", len(self._acks_ok) + len(self._acks_fail), self.queue,
                      STOP_PATIENCE_S)  # fmt: skip
            return None
        return max(0.0, wait)

    def give_back(self) -> None:
        """Graceful end: every prefetched job never started is to be given back."""
        leases = self._returned + list(self.ready)
        self._returned, self.ready = [], deque()
        if leases:
            self._effects.append(StopBeats([c.job_id for c in leases]))
            self._effects.append(Release(leases))
