"""The consumer loop: reserve → handler → ack, with heartbeats, promotion and reaping.

Semantics follow PROTOCOL.md §6 (the official SDKs' consumer): one job at a time; a handler
that returns is acked as completed, one that raises is acked as failed with
``"<ExceptionType>: <message>"`` (retried until ``max_attempts``); a lease lost while the
handler ran is never acked.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import redis

from .errors import ConnectionLost, LeaseError, NotActive, TokenMismatch
from .types import Paused, ReservedJob

if TYPE_CHECKING:
    from .client import Client

__all__ = ["JobCtx", "Exec", "CheckCompletion", "Consumer", "ConsumerStats", "consume"]

log = logging.getLogger("omniq_fast.consumer")

_TRANSIENT_ERRORS = (ConnectionLost, redis.RedisError, OSError)

Handler = Callable[["JobCtx"], Any]
LineLogger = Union[Callable[[str], Any], logging.Logger]


class Exec:
    """What a handler may do with the client (``ctx.exec``), as in the official SDK."""

    __slots__ = ("_client", "default_child_id")

    def __init__(self, client: "Client", default_child_id: str) -> None:
        self._client = client
        self.default_child_id = default_child_id

    def publish(self, *, queue: str, payload: Any, **options: Any) -> str:
        """Publish a job (same options as :meth:`Client.publish`); returns its id."""
        return self._client.publish(queue, payload, **options)

    def pause(self, *, queue: str) -> str:
        """Pause ``queue``."""
        return self._client.pause(queue)

    def resume(self, *, queue: str) -> int:
        """Resume ``queue``."""
        return self._client.resume(queue)

    def is_paused(self, *, queue: str) -> bool:
        """Whether ``queue`` is paused."""
        return self._client.is_paused(queue)

    def childs_init(self, key: str, expected: int) -> None:
        """Start a completion counter (see :meth:`Client.childs_init`)."""
        self._client.childs_init(key, expected)

    def child_ack(self, key: str, child_id: Optional[str] = None) -> int:
        """Count this job (or ``child_id``) as a finished child; returns how many remain."""
        return self._client.child_ack(key, child_id or self.default_child_id)


class CheckCompletion:
    """Fan-out completion with the Go client's names (``ctx.check_completion``)."""

    __slots__ = ("_exec",)

    def __init__(self, exec_: Exec) -> None:
        self._exec = exec_

    def init_job_counter(self, key: str, expected: int) -> None:
        """Parent: expect ``expected`` children under ``key``."""
        self._exec.childs_init(key, expected)

    def job_decrement(self, key: str, child_id: Optional[str] = None) -> int:
        """Child: count this job as done. Returns the remaining count, 0 exactly once (for
        the last child), and -1 on any error — it never raises."""
        try:
            return self._exec.child_ack(key, child_id)
        except Exception:  # the contract: -1, never an exception in a child's handler
            log.debug("job_decrement(%r) failed", key, exc_info=True)
            return -1


@dataclass(eq=False)
class JobCtx:
    """What a handler receives: the job, its lease, and helpers (``exec``).

    ``payload`` is the parsed JSON (the raw text when it is not JSON). ``lease_lost`` turns
    true if a heartbeat found that the lease was taken away (reaped, or re-reserved by
    another consumer), or if the ack was refused for that reason; either way this consumer
    has not acked the job.
    """

    queue: str
    job_id: str
    payload_raw: str
    payload: Any
    attempt: int
    max_attempts: int
    lock_until_ms: int
    lease_token: str
    exec: Exec
    gid: str = ""
    lease_lost: bool = False
    check_completion: CheckCompletion = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.check_completion = CheckCompletion(self.exec)


@dataclass
class ConsumerStats:
    """Counts of what a consumer did, returned by :meth:`Consumer.run`."""

    handled: int = 0
    succeeded: int = 0
    failed: int = 0
    lease_lost: int = 0


def default_heartbeat_interval(timeout_ms: int) -> float:
    """Half the lease, between 1 s and 10 s."""
    return min(10.0, max(1.0, timeout_ms / 2000.0))


class _Heartbeater:
    """One thread that keeps the current job's lease alive while its handler runs."""

    def __init__(self, consumer: "Consumer") -> None:
        self._consumer = consumer
        self._cond = threading.Condition()
        self._ctx: Optional[JobCtx] = None
        self._interval = 1.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="omniq-heartbeat", daemon=True)
        self._thread.start()

    def watch(self, ctx: JobCtx, interval: float) -> None:
        with self._cond:
            self._ctx, self._interval = ctx, interval
            self._cond.notify()

    def unwatch(self) -> None:
        # Holding the lock here means a heartbeat in flight finishes before the ack.
        with self._cond:
            self._ctx = None
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._ctx = None
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._ctx is None:
                    self._cond.wait()
                    continue
                ctx = self._ctx
                if not self._cond.wait_for(
                    lambda: self._ctx is not ctx or self._closed, timeout=self._interval
                ):
                    self._beat(ctx)

    def _beat(self, ctx: JobCtx) -> None:
        try:
            ctx.lock_until_ms = self._consumer.client.heartbeat(
                ctx.queue, ctx.job_id, ctx.lease_token
            )
        except (NotActive, TokenMismatch) as exc:
            ctx.lease_lost = True
            self._ctx = None
            log.warning("lease lost for job %s (%s); it will not be acked", ctx.job_id, exc.reason)
        except Exception:
            # A transient error: the lease may still be fine, and the next beat may work.
            log.warning("heartbeat failed for job %s", ctx.job_id, exc_info=True)


class Consumer:
    """A consumer of one queue; :meth:`run` blocks until stopped.

    Stop it with :meth:`stop` (from any thread), ``max_jobs``, SIGTERM (after the current
    job), or Ctrl+C: with ``drain=True`` the current job finishes first and a second
    Ctrl+C exits at once; with ``drain=False`` it exits at once (the running job is not
    acked; its lease expires and it is retried).
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
    ) -> None:
        from .keys import validate_queue_name

        self.client = client
        self.queue = validate_queue_name(queue)
        self.handler = handler
        self.poll_interval_s = poll_interval_s
        self.promote_interval_s = promote_interval_s
        self.promote_batch = promote_batch
        self.reap_interval_s = reap_interval_s
        self.reap_batch = reap_batch
        self.heartbeat_interval_s = heartbeat_interval_s
        self.verbose = verbose
        self.drain = drain
        self.stop_on_ctrl_c = stop_on_ctrl_c
        self.max_jobs = max_jobs
        self.stats = ConsumerStats()
        self._say: Callable[[str], Any] = (
            logger.info if isinstance(logger, logging.Logger) else logger
        )
        self._stop = threading.Event()
        self._sigint_count = 0

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the loop to exit after the current job (safe from any thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _line(self, text: str) -> None:
        if self.verbose:
            self._say(f"[consume] {text}")

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
        raise KeyboardInterrupt

    # ------------------------------------------------------------------ loop

    def run(self) -> ConsumerStats:
        """Consume until stopped; returns what was done."""
        restore = self._install_signals()
        heartbeater = _Heartbeater(self)
        try:
            self._loop(heartbeater)
        except KeyboardInterrupt:
            pass  # exit at once: the running job is not acked, its lease will expire
        finally:
            heartbeater.close()
            restore()
        return self.stats

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

    def _loop(self, heartbeater: _Heartbeater) -> None:
        next_promote = next_reap = 0.0
        paused_wait = max(0.25, 10 * self.poll_interval_s)
        while not self._stop.is_set():
            tick = time.monotonic()
            if tick >= next_promote:
                self._maintenance("promote_delayed", max_promote=self.promote_batch)
                next_promote = tick + self.promote_interval_s
            if tick >= next_reap:
                self._maintenance("reap_expired", max_reap=self.reap_batch)
                next_reap = tick + self.reap_interval_s
            if self._stop.is_set():
                break  # stopped during maintenance: do not take one more job
            reserved_at = self.client_now()
            try:
                res = self.client.reserve(self.queue, now_ms_override=reserved_at)
            except _TRANSIENT_ERRORS:
                # If the reply was lost after the job was leased, the lease expires and
                # the reaper hands the job out again: waiting here loses nothing.
                log.warning("reserve failed on %s; retrying", self.queue, exc_info=True)
                self._stop.wait(paused_wait)
                continue
            if res is None:
                self._stop.wait(self.poll_interval_s)
                continue
            if isinstance(res, Paused):
                self._stop.wait(paused_wait)
                continue
            self._process(res, reserved_at, heartbeater)
            if self.max_jobs is not None and self.stats.handled >= self.max_jobs:
                break
        if self.stopping:
            self._line(f"stop requested; exiting (idle). queue={self.queue}")

    @staticmethod
    def client_now() -> int:
        return time.time_ns() // 1_000_000

    def _maintenance(self, op: str, **kwargs: int) -> None:
        try:
            getattr(self.client, op)(self.queue, **kwargs)
        except Exception:
            # Another consumer will do it, or we will next time: never stop consuming.
            log.warning("%s failed on %s", op, self.queue, exc_info=True)

    def _process(self, job: ReservedJob, reserved_at: int, heartbeater: _Heartbeater) -> None:
        core = self.client._core
        ctx = JobCtx(
            queue=self.queue,
            job_id=job.job_id,
            payload_raw=job.payload,
            payload=core.loads_payload(job.payload),
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            lock_until_ms=job.lock_until_ms,
            lease_token=job.lease_token,
            exec=Exec(self.client, job.job_id),
            gid=job.gid,
        )
        self.stats.handled += 1
        if self.verbose:
            # Non-ASCII text as is, like the official SDK's line (not "\u00e9").
            shown = (
                ctx.payload
                if isinstance(ctx.payload, str)
                else json.dumps(ctx.payload, ensure_ascii=False)
            )
            self._line(
                f"received job_id={job.job_id} attempt={job.attempt} "
                f"gid={job.gid or '-'} payload={shown}"
            )
        # reserve's now was ours, so the lease length is exact without an HGET.
        interval = self.heartbeat_interval_s or default_heartbeat_interval(
            job.lock_until_ms - reserved_at
        )
        heartbeater.watch(ctx, interval)
        error: Optional[BaseException] = None
        try:
            self.handler(ctx)
        except Exception as exc:
            error = exc
        finally:
            heartbeater.unwatch()
        if ctx.lease_lost:
            self.stats.lease_lost += 1
            self._line(f"lease lost job_id={job.job_id}; not acked")
            return
        if error is None:
            self._ack_success(ctx)
        else:
            self._ack_fail(ctx, f"{type(error).__name__}: {error}")

    def _ack_success(self, ctx: JobCtx) -> None:
        try:
            self.client.ack_success(self.queue, ctx.job_id, ctx.lease_token)
        except LeaseError as exc:
            self._ack_refused(ctx, "ack_success", exc)
            return
        except _TRANSIENT_ERRORS:
            # The ack may or may not have landed; if not, the lease expires and the job
            # is retried. Either way the consumer goes on.
            log.warning("ack_success failed for job %s", ctx.job_id, exc_info=True)
            return
        self.stats.succeeded += 1
        self._line(f"ack success job_id={ctx.job_id}")

    def _ack_refused(self, ctx: JobCtx, op: str, exc: LeaseError) -> None:
        # The lease was taken between the last heartbeat and the ack.
        ctx.lease_lost = True
        self.stats.lease_lost += 1
        log.warning("%s refused for job %s: %s", op, ctx.job_id, exc.reason)

    def _ack_fail(self, ctx: JobCtx, message: str) -> None:
        try:
            outcome, due_ms = self.client.ack_fail(
                self.queue, ctx.job_id, ctx.lease_token, error=message
            )
        except LeaseError as exc:
            self._ack_refused(ctx, "ack_fail", exc)
            return
        except _TRANSIENT_ERRORS:
            log.warning("ack_fail failed for job %s", ctx.job_id, exc_info=True)
            return
        self.stats.failed += 1
        if outcome == "RETRY":
            self._line(f"ack fail job_id={ctx.job_id} => RETRY due_ms={due_ms}")
        else:
            self._line(f"ack fail job_id={ctx.job_id} => FAILED")
        self._line(f"error job_id={ctx.job_id} => {message}")


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
    ``heartbeat_interval_s=None`` (half the job's timeout, 1-10 s), ``verbose=False``,
    ``logger=print`` (or a ``logging.Logger``), ``drain=True``, ``stop_on_ctrl_c=True``,
    ``max_jobs=None``.
    """
    return Consumer(client, queue, handler, **options).run()
