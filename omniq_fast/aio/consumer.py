"""The asyncio consumer: reserve → ``async def`` handler → ack, on the caller's event loop.

:class:`AsyncConsumer` makes the same decisions as :class:`~omniq_fast.Consumer` (they both
drive a :class:`~omniq_fast._protocol.dispatch.Dispatcher` and a
:class:`~omniq_fast._protocol.leases.LeaseBook`); only the shell differs: tasks instead of
threads. ``await consumer.run()`` runs

* the dispatcher: one task that owns the reserve/ack round trips (the one ``run`` runs in);
* the handlers: ``concurrency`` worker tasks take the reserved jobs in turn;
* the heartbeats: one task beating every due lease at once;
* the wake listener: key tracking of the queue's keys on a ``redis.asyncio`` pub/sub
  connection, so jobs from any SDK wake it and promote/reap follow the server's next due
  times (:mod:`omniq_fast.aio._wake`); where the server will not track, the queue's wake
  channel, with ``poll_interval_s`` the fallback.

Handlers must be ``async def`` (or objects whose ``__call__`` is): a plain ``def`` would block
the loop every other job and heartbeat runs on, so it is refused with
:class:`~omniq_fast.errors.InvalidOptionType` (run it with :class:`~omniq_fast.Consumer`, or
wrap it: ``async def handler(ctx): await asyncio.to_thread(work, ctx)``). In a handler,
``ctx`` is an :data:`AsyncJobCtx`: ``ctx.exec`` is an :class:`AsyncExec` and
``ctx.check_completion`` an :class:`AsyncCheckCompletion`, whose methods are coroutines.

Stopping: :meth:`AsyncConsumer.stop`, ``max_jobs``, ``burst``, SIGTERM, Ctrl+C (when ``run``
is awaited in the main thread, on a loop with signal handlers), or cancelling the task that
awaits ``run``: running handlers finish and are acked, prefetched jobs are given back with
``release_many``, nothing is acked that did not run. A second cancellation (or Ctrl+C)
leaves at once: unfinished jobs are not acked and their leases expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, Sequence

from .._consumer_engine import engine_of, now_ms
from .._protocol.dispatch import DEFAULT_PREFETCH, STOP_PATIENCE_S, Dispatcher, Trip
from .._protocol.effects import (
    Effect, Failing, HoldBeats, Line, Log, Recovered, Release, Report, ResumeBeats,
    StartBeats, StopBeats,
)  # fmt: skip
from .._protocol.leases import LeaseBook
from ..consumer import Consumer
from .._context import ConsumerStats, JobCtx
from ..errors import TRANSIENT_ERRORS, InvalidOptionType
from ..keys import validate_queue_name
from ..observe import ConsumerObserver, ObserverGuard
from .._options import check_consumer_options
from ._tasks import cancel_and_wait, uncancel_current
from ._wake import listen
from .._protocol.idle import Change
from .._outage import Outage
from .._reporting import is_async_handler, received_line, report
from .._stopping import LineLogger, StopOnSignals
from .._workers import call_async_handler

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["AsyncConsumer", "AsyncExec", "AsyncCheckCompletion", "AsyncHandler", "AsyncJobCtx"]

log = logging.getLogger("omniq_fast.consumer")


def _same_doc(sync: Any) -> Callable[[Any], Any]:
    """Give the decorated method the docstring of :class:`Consumer`'s (one surface)."""

    def attach(method: Any) -> Any:
        method.__doc__ = sync.__doc__
        return method

    return attach


class AsyncExec:
    """What an async handler may do with the client (``ctx.exec``): :class:`~omniq_fast.Exec`'s
    methods, as coroutines."""

    __slots__ = ("_client", "default_child_id")

    def __init__(self, client: "AsyncClient", default_child_id: str) -> None:
        self._client = client
        self.default_child_id = default_child_id

    async def publish(self, *, queue: str, payload: Any, **options: Any) -> str:
        """Publish a job (same options as :meth:`AsyncClient.publish`); returns its id."""
        return await self._client.publish(queue, payload, **options)

    async def pause(self, *, queue: str) -> str:
        """Pause ``queue``."""
        return await self._client.pause(queue)

    async def resume(self, *, queue: str) -> int:
        """Resume ``queue``."""
        return await self._client.resume(queue)

    async def is_paused(self, *, queue: str) -> bool:
        """Whether ``queue`` is paused."""
        return await self._client.is_paused(queue)

    async def childs_init(self, key: str, expected: int) -> None:
        """Start a completion counter (see :meth:`AsyncClient.childs_init`)."""
        await self._client.childs_init(key, expected)

    async def child_ack(self, key: str, child_id: Optional[str] = None) -> int:
        """Count this job (or ``child_id``) as a finished child; returns how many remain."""
        return await self._client.child_ack(key, child_id or self.default_child_id)

    def _completion(self) -> "AsyncCheckCompletion":
        """The ``ctx.check_completion`` that goes with these helpers (awaited)."""
        return AsyncCheckCompletion(self)


class AsyncCheckCompletion:
    """Fan-out completion with the Go client's names (``ctx.check_completion``), awaited."""

    __slots__ = ("_exec",)

    def __init__(self, exec_: AsyncExec) -> None:
        self._exec = exec_

    async def init_job_counter(self, key: str, expected: int) -> None:
        """Parent: expect ``expected`` children under ``key``."""
        await self._exec.childs_init(key, expected)

    async def job_decrement(self, key: str, child_id: Optional[str] = None) -> int:
        """Child: count this job as done. Returns the remaining count, 0 exactly once (for
        the last child), and -1 on any error — it never raises."""
        try:
            return await self._exec.child_ack(key, child_id)
        except Exception:  # the contract: -1, never an exception in a child's handler
            log.debug("job_decrement(%r) failed", key, exc_info=True)
            return -1


#: What an async handler receives: a :class:`~omniq_fast.JobCtx` whose helpers are
#: coroutines (``await ctx.exec.publish(...)``, ``await ctx.check_completion...``).
AsyncJobCtx = JobCtx[AsyncExec, AsyncCheckCompletion]
AsyncHandler = Callable[[AsyncJobCtx], Awaitable[Any]]


#: Completions after which a worker whose handlers never suspend lets the dispatcher run:
#: the dispatcher plans a trip once a quarter of its target (64 + concurrency) is free.
_YIELD_EVERY = 16


async def _wait(event: asyncio.Event, timeout: Optional[float]) -> None:
    """Until ``event`` is set or ``timeout`` seconds passed (a timer, not a task per wait)."""
    if event.is_set():
        return
    if timeout is not None and timeout <= 0:
        await asyncio.sleep(0)  # let handlers and the listener run before going on
        return
    timer = None
    if timeout is not None:
        timer = asyncio.get_running_loop().call_later(timeout, event.set)
    try:
        await event.wait()
    finally:
        if timer is not None:
            timer.cancel()


class AsyncConsumer(StopOnSignals):
    """A consumer of one queue on the running event loop; ``await`` :meth:`run` until
    stopped. Same options as :class:`~omniq_fast.Consumer` (see the module docstring for
    what differs: ``async def`` handlers, tasks instead of threads)."""

    def __init__(
        self,
        client: "AsyncClient",
        queue: str,
        handler: AsyncHandler,
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
        if not is_async_handler(handler):
            raise InvalidOptionType(
                "AsyncConsumer runs async def handlers; run a plain def with Consumer, or "
                "wrap it: async def handler(ctx): await asyncio.to_thread(work, ctx)"
            )
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
        self._dispatch = Dispatcher(
            self._engine.core, self.queue, lambda job_id: AsyncExec(client, job_id),
            concurrency=concurrency, prefetch=self.prefetch, max_jobs=max_jobs,
            poll_interval_s=poll_interval_s, promote_interval_s=promote_interval_s,
            promote_batch=promote_batch, reap_interval_s=reap_interval_s,
            reap_batch=reap_batch, heartbeat_interval_s=heartbeat_interval_s,
            ack_delay_s=ack_delay_s, burst=burst, verbose=verbose,
            observed=observer is not None,
        )  # fmt: skip
        self.stats: ConsumerStats = self._dispatch.stats
        self._book = LeaseBook(self._engine.core, self.queue)
        self._stopped = False
        self._closing = False  # workers give back the jobs they have not started
        self._fatal: Optional[BaseException] = None
        # Made in run(), on the loop it runs on.
        self._event: Optional[asyncio.Event] = None
        self._beat_event: Optional[asyncio.Event] = None
        self._beat_lock: Optional[asyncio.Lock] = None
        self._jobs: Optional[asyncio.Queue[JobCtx]] = None
        # Trips sent ahead and not answered yet, oldest first (see _loop).
        self._flights: deque[tuple[Trip, asyncio.Future[list[Any]]]] = deque()
        self._sleep_until = 0.0
        self._done: list[tuple[JobCtx, Optional[str], float]] = []
        self._outage = Outage(log, f"consumer of {queue}")

    # ------------------------------------------------------------------ control

    @_same_doc(Consumer.stop)
    def stop(self) -> None:
        self._stopped = True
        # At once, not at the dispatcher's next turn (it may be awaiting a round trip):
        # a worker must not start a job queued for it after the stop.
        self._closing = True
        if self._event is not None:
            self._event.set()

    @_same_doc(Consumer.abort)
    def abort(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        log.error("handler raised %s on %s; stopping the consumer", type(exc).__name__,
                  self.queue)  # fmt: skip
        self.stop()

    @_same_doc(Consumer.wake_up)
    def wake_up(self) -> None:
        self._dispatch.woken = True
        if self._event is not None:
            self._event.set()

    @_same_doc(Consumer._tracked)
    def _tracked(self, tracking: bool) -> None:
        self._dispatch.timers.arm(tracking)
        if self._event is not None:
            self._event.set()

    @_same_doc(Consumer._changed)
    def _changed(self, change: Change) -> None:
        self._dispatch.told(change)
        if self._event is not None:
            self._event.set()

    @property
    @_same_doc(Consumer.stopping)
    def stopping(self) -> bool:
        return self._stopped

    # ------------------------------------------------------------------ run

    @_same_doc(Consumer.run)
    async def run(self) -> ConsumerStats:
        loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._beat_event = asyncio.Event()
        self._beat_lock = asyncio.Lock()
        if self._stopped:
            self._event.set()
        restore = self._install_loop_signals(loop)
        helpers = [asyncio.ensure_future(self._beat_loop())]
        if self.wake:
            helpers.append(asyncio.ensure_future(self._listen()))
        # Handlers run in worker tasks, never in run()'s own: cancelling run() is a
        # graceful stop, and must not interrupt a running handler.
        self._jobs = asyncio.Queue()
        workers = [asyncio.ensure_future(self._work()) for _ in range(self.concurrency)]
        cancelled = False
        try:
            while True:
                try:
                    await self._loop()
                    await self._finish()
                    break
                except asyncio.CancelledError:
                    if self._hard_exit:
                        # Our own hard Ctrl+C (or _exit_now()) cancelled us: leave at once,
                        # acking nothing more, and return the counts as Consumer.run does.
                        uncancel_current()
                        break
                    # The first cancellation is a graceful stop; the second leaves at once.
                    if cancelled:
                        raise
                    cancelled = True
                    self.stop()
        finally:
            await cancel_and_wait(helpers + workers)
            self._book.clear()
            restore()
        if self._fatal is not None:
            raise self._fatal
        if cancelled and not self._hard_exit:
            raise asyncio.CancelledError
        return self.stats

    def _exit_now(self) -> None:
        """Make the next cancellation of :meth:`run` a hard exit (what a second Ctrl+C
        does): it leaves at once, acks nothing more, and returns the counts so far.
        Unfinished jobs are retried when their leases expire. For the AsyncMultiConsumer
        that owns this consumer (not public: Consumer has no such call)."""
        self._hard_exit = True

    async def _loop(self) -> None:
        dispatch, event, jobs = self._dispatch, self._event, self._jobs
        assert event is not None and jobs is not None
        # While jobs are in hand (queued for the workers), trips go out ahead, up to AHEAD
        # unanswered, and are answered in order as their replies come: the server has the
        # next one queued when it answers one. Kept across a graceful stop's re-entry.
        flights = self._flights
        while True:
            event.clear()
            self._collect()
            stopping = self._stopped
            while flights and (stopping or flights[0][1].done()):
                await self._land(*flights.popleft())
            if stopping:
                self._closing = True
                if dispatch.running == 0 and not flights:
                    return
            now = time.monotonic()
            trip = dispatch.plan(now, now_ms(), stopping, ahead=True)
            if trip is not None:
                sending = await self._start(trip)
                if dispatch.runs_meanwhile(stopping):
                    sending.add_done_callback(lambda _: event.set())
                    flights.append((trip, sending))
                else:
                    await self._land(trip, sending)  # none other on the wire
            if dispatch.should_stop():
                self.stop()
                continue
            while (ctx := dispatch.next_job(stopping)) is not None:
                jobs.put_nowait(ctx)
            await _wait(event, dispatch.wait_time(now, stopping))

    async def _round_trip(self, trip: Trip) -> None:
        await self._land(trip, await self._start(trip))

    async def _start(self, trip: Trip) -> "asyncio.Future[list[Any]]":
        """Send the trip's calls; what :meth:`_land` reads their replies from."""
        dispatch, lock = self._dispatch, self._beat_lock
        assert lock is not None
        effects = dispatch.take_effects()
        self._apply(effects)
        if lock.locked() and any(isinstance(e, HoldBeats) for e in effects):
            async with lock:
                pass  # a beat in flight finishes first: no beat follows an ack
        return asyncio.ensure_future(self._engine.run_many(trip.anchor, trip.calls))

    async def _land(self, trip: Trip, sending: "asyncio.Future[list[Any]]") -> None:
        """The replies of a trip :meth:`_start` sent, acted on."""
        dispatch = self._dispatch
        cancelled: Optional[asyncio.CancelledError] = None
        try:
            try:
                replies = await asyncio.shield(sending)
            except asyncio.CancelledError as exc:
                # Cancelled (a graceful stop): the calls are on their way; read their
                # replies all the same, so that no ack's outcome is lost.
                cancelled = exc
                replies = await sending
        except TRANSIENT_ERRORS as exc:
            dispatch.lost(trip, exc, time.monotonic())
        else:
            dispatch.replied(trip, replies, time.monotonic())
        effects = dispatch.take_effects()
        self._apply(effects)
        for effect in effects:
            if isinstance(effect, Release):
                await self._release(effect)
        if cancelled is not None:
            raise cancelled

    def _apply(self, effects: Sequence[Effect]) -> None:
        """Do what the dispatcher decided (releases aside: they await)."""
        book, observer = self._book, self._observer
        for effect in effects:
            if isinstance(effect, Line):
                self._line(effect.text, effect.ctx, **effect.fields)
            elif isinstance(effect, (StopBeats, Release)):
                if isinstance(effect, StopBeats):
                    book.drop(effect.job_ids)
            elif isinstance(effect, HoldBeats):
                book.hold(effect.job_ids)
            elif isinstance(effect, StartBeats):
                empty = len(book) == 0
                due = book.add(effect.ctxs, effect.interval, time.monotonic())
                if (empty or due < self._sleep_until) and self._beat_event is not None:
                    self._beat_event.set()
            elif isinstance(effect, ResumeBeats):
                if book.resume(effect.job_ids) and self._beat_event is not None:
                    self._beat_event.set()
            elif isinstance(effect, Report):
                if observer is not None:
                    report(observer, effect)
            elif isinstance(effect, Recovered):
                self._outage.recovered()
            elif isinstance(effect, Failing):
                self._outage.failed(effect.cause)
            else:
                log.log(effect.level, effect.msg, *effect.args)

    async def _release(self, effect: Release) -> None:
        leases = [(c.job_id, c.lease_token) for c in effect.ctxs]
        releasing = asyncio.ensure_future(self.client.release_many(self.queue, leases))
        try:
            try:
                await asyncio.shield(releasing)
            except asyncio.CancelledError:
                await releasing  # cancelled meanwhile: the jobs go back all the same
                raise
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

    @_same_doc(Consumer.received)
    def received(self, ctx: JobCtx) -> bool:
        if self._closing:
            return False
        if self._observer:
            self._observer.started(ctx)
        if self.verbose:
            self._line(received_line(ctx), ctx, gid=ctx.gid)
        return True

    @_same_doc(Consumer.finished)
    def finished(self, ctx: JobCtx, error: Optional[str], seconds: float) -> None:
        done = self._done
        done.append((ctx, error, seconds))
        if len(done) == 1 and self._event is not None:
            self._event.set()

    async def _run_job(self, ctx: JobCtx) -> None:
        """Run one job's handler here; its outcome goes to :meth:`finished`."""
        self.received(ctx)
        error, seconds, fatal = await call_async_handler(self.handler, ctx, self.tracebacks)
        self.finished(ctx, error, seconds)
        if fatal is not None:
            self.abort(fatal)

    async def _work(self) -> None:
        jobs = self._jobs
        assert jobs is not None
        while True:
            ctx = await jobs.get()
            if self._closing:
                self.finished(ctx, None, -1.0)  # never started: given back at the end
                continue
            await self._run_job(ctx)
            if len(self._done) == _YIELD_EVERY:
                # A handler that never suspends (and a Queue.get of a job already queued)
                # would run the whole batch without the dispatcher getting a turn: it
                # would send the next trip only once the batch is done, and the server
                # would idle meanwhile. Give it a turn now and then.
                await asyncio.sleep(0)

    def _collect(self) -> None:
        done, dispatch = self._done, self._dispatch
        if not done:
            return
        self._done = []
        now = time.monotonic()
        for ctx, error, seconds in done:
            dispatch.finished(ctx, error, seconds, now)
        self._apply(dispatch.take_effects())

    async def _finish(self) -> None:
        """Graceful end: flush the last acks, give back prefetched jobs never started."""
        self._collect()
        dispatch = self._dispatch
        give_up = time.monotonic() + STOP_PATIENCE_S
        while dispatch.has_acks:
            wait = dispatch.finish_wait(time.monotonic(), give_up)
            if wait is None:
                break
            if wait > 0:
                await asyncio.sleep(wait)
            await self._round_trip(dispatch.ack_trip(now_ms()))
        dispatch.give_back()
        effects = dispatch.take_effects()
        self._apply(effects)
        for effect in effects:
            if isinstance(effect, Release):
                await self._release(effect)
        self._apply(dispatch.take_effects())  # the log lines of the last acks
        if self.stopping:
            self._line(f"stop requested; exiting (idle). queue={self.queue}")

    # ------------------------------------------------------------------ helpers' tasks

    async def _beat_loop(self) -> None:
        """Beat every due lease at once, then sleep until the next is due."""
        book, wake, lock = self._book, self._beat_event, self._beat_lock
        assert wake is not None and lock is not None
        outage = Outage(log, f"heartbeats on {self.queue}")
        while True:
            due = book.next_due()
            now = time.monotonic()
            if due is None or due > now:
                wake.clear()
                self._sleep_until = float("inf") if due is None else due
                await _wait(wake, None if due is None else due - now)
                continue
            async with lock:
                beats = book.due(now)
                try:
                    results = await self._engine.run_plan(book.beat_plan(beats, now_ms()))
                except Exception as exc:
                    outage.failed(exc)
                    book.beat_failed(beats, now)
                    continue
                outage.recovered()
                for ctx, reason in book.beaten(beats, results, now):
                    log.warning("lease lost for job %s (%s); it will not be acked",
                                ctx.job_id, reason)  # fmt: skip

    async def _listen(self) -> None:
        """Key tracking (or the wake channel) for the dispatcher, as the blocking
        consumer's wake listener does (see :mod:`omniq_fast.aio._wake`)."""
        await listen(self._engine, self.queue, wake_up=self.wake_up, armed=self._tracked,
                     changed=self._changed)  # fmt: skip
