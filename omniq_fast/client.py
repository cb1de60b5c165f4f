"""The synchronous client: :class:`Client` and the drop-in :class:`OmniqClient`.

One implementation serves both. ``Client`` takes the queue (and payload) positionally;
``OmniqClient`` only changes the constructor to the official SDK's keywords, so every call
written against ``omniq.client.OmniqClient`` (all keyword arguments) works unchanged.

Each method builds its call with :mod:`omniq_fast._protocol.calls` (arguments checked, the
command encoded, the reply's meaning decided there) and runs it on the client's
:class:`~omniq_fast._engine.Engine`; :class:`~omniq_fast.AsyncClient` builds the same calls.
"""

from __future__ import annotations

import threading
import warnings
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, TypeVar, Union

import redis as redis_py
from redis.cluster import RedisCluster

from ._engine import CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S, Engine, now_ms
from ._protocol import calls
from ._protocol.calls import MAX_BATCH, MAX_SCRIPT_BATCH, Lease
from ._protocol.streams import PublishRun
from .keys import queue_base
from ._options import MAX_EPOCH_MS, check_int
from ._pipelines import publish_many
from .types import AckFailResult, BatchResultItem, JobResult, Paused, ReservedJob, ReserveResult

if TYPE_CHECKING:
    from .consumer import ConsumerStats, Handler, LineLogger
    from .observe import ConsumerObserver

__all__ = [
    "Client", "OmniqClient", "now_ms", "MAX_BATCH", "MAX_SCRIPT_BATCH", "CONNECT_TIMEOUT_S",
    "SOCKET_TIMEOUT_S",
]  # fmt: skip

_Self = TypeVar("_Self", bound="Client")


class Client:
    """A connection to one OmniQ server (Redis or Valkey).

    ``url`` is a redis-py URL (``redis://``, ``rediss://`` for TLS, ``unix://``), with ACL
    user and password in it if needed; or pass a ready ``redis.Redis`` as ``redis=``
    (its ``decode_responses`` setting does not matter). Extra keyword arguments go to
    ``redis.Redis.from_url`` (``socket_timeout=...``). Use as a context manager or call
    :meth:`close`.

    Timeouts: connections this client opens default to ``socket_connect_timeout=5`` and
    ``socket_timeout=30`` seconds (:data:`CONNECT_TIMEOUT_S`, :data:`SOCKET_TIMEOUT_S`);
    pass either keyword, or put it in the URL (``?socket_timeout=5``), to change it. A
    ``redis=`` client keeps its own settings.

    Redis Cluster is found on first use (``INFO cluster``), or forced with ``cluster=True``
    (``False`` skips the check); a ``redis.cluster.RedisCluster`` may be passed as
    ``redis=``. Each queue's commands then go to the master owning its slot, and
    ``cluster_retry_s`` bounds how long an operation waits while its slot is migrated or
    failed over (see :mod:`omniq_fast._cluster`).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        redis: Optional[Union[redis_py.Redis, RedisCluster]] = None,
        client_name: Optional[str] = None,
        cluster: Optional[bool] = None,
        cluster_retry_s: float = 10.0,
        _core: Optional[ModuleType] = None,
        **redis_options: Any,
    ) -> None:
        self._engine = Engine(url, redis, client_name, cluster, cluster_retry_s, _core, redis_options)
        self._core: ModuleType = self._engine.core

    # ------------------------------------------------------------------ lifecycle

    @property
    def redis(self) -> Any:
        """The underlying redis-py client (for plain reads and monitoring): a
        ``redis.Redis``, or in cluster mode a ``redis.cluster.RedisCluster``."""
        return self._engine.redis

    @property
    def is_cluster(self) -> bool:
        """Whether this client talks to a Redis Cluster (asks the server on first use)."""
        return self._engine.is_cluster

    def close(self) -> None:
        """Close the connections this client opened (not a ``redis=`` it was given)."""
        self._engine.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    @staticmethod
    def queue_base(queue_name: str) -> str:
        """``{queue}``, the prefix of every key of the queue."""
        return queue_base(queue_name)

    @staticmethod
    def _now(now_ms_override: int) -> int:
        check_int("now_ms_override", now_ms_override, 0, MAX_EPOCH_MS)
        return now_ms_override or now_ms()

    # ------------------------------------------------------------------ producing

    def publish(
        self,
        queue: str,
        payload: Any,
        *,
        job_id: Optional[str] = None,
        max_attempts: int = 3,
        timeout_ms: int = 30000,
        backoff_ms: int = 5000,
        due_ms: int = 0,
        gid: Optional[str] = None,
        group_limit: int = 0,
        now_ms_override: int = 0,
    ) -> str:
        """Queue a job and return its id.

        ``payload`` must be a dict or list (or a dataclass / pydantic model, converted
        first). ``due_ms`` in the future delays the job until then. ``gid`` puts it in a
        FIFO group that runs at most ``group_limit`` jobs at once (the first publisher to
        set a limit wins; 0 leaves it unset, which means 1). Every argument is checked
        before anything is written.

        Idempotent by job id: if a job with ``job_id`` exists in the queue (any state,
        completed and failed included, until it is removed or trimmed), nothing is
        written and :class:`~omniq_fast.errors.DuplicateJob` is raised (the official SDK
        overwrites the job and queues it again). So a publish whose reply was lost
        (:class:`~omniq_fast.errors.ConnectionLost`) can be sent again with the same id.
        """
        # The clock read inline when no override is given (a publish loop's case): the
        # checks of _now cost a share of a publish; anything else takes them.
        if type(now_ms_override) is int and now_ms_override == 0:
            now = now_ms()
        else:
            now = self._now(now_ms_override)
        return self._engine.run(calls.publish(
            self._core, queue, payload, job_id, max_attempts, timeout_ms, backoff_ms, due_ms,
            gid, group_limit, now,
        ))  # fmt: skip

    #: The official SDK's second name for :meth:`publish` (same checks, same encoding).
    publish_json = publish

    def publish_many(
        self,
        queue: str,
        jobs: Iterable[Any],
        *,
        max_attempts: int = 3,
        timeout_ms: int = 30000,
        backoff_ms: int = 5000,
        due_ms: int = 0,
        gid: Optional[str] = None,
        group_limit: int = 0,
        now_ms_override: int = 0,
        batch_size: int = 500,
        retry: int = 0,
    ) -> list[str]:
        """Queue every job of ``jobs`` and return their ids, in order.

        Items are payloads (dict/list) sharing the keyword options, or
        :class:`~omniq_fast.Job` objects with options of their own. ``jobs`` may be any
        iterable, a generator of millions included: it is encoded ``batch_size`` jobs per
        script call while the previous call runs on the server, so memory stays flat.

        Bad input: when ``jobs`` is a list or tuple, the options and ids of every item are
        checked before anything is written (payloads are encoded batch by batch, to keep
        one pass over them). For other iterables each batch is checked whole before it is
        sent. An invalid item raises its typed error when nothing was written yet;
        later, a :class:`PublishManyError` says which ids were written.

        Publish is idempotent by job id: an item whose ``job_id`` exists already is not
        written; once every other item is, :class:`DuplicateJobs` lists them.

        ``retry=N`` sends batches whose outcome is unknown (a lost connection, a timeout)
        or that the server refused before running them (``LOADING``, ``BUSY``, ``OOM``...)
        again, up to N times with a growing pause (0.05 s doubling, at most 2 s), and then
        goes on with the rest. A re-sent job that landed the first time is skipped by the
        server: it is reported written. (Only a job that was completed, trimmed from the
        100 kept completed jobs, or removed, between the lost reply and the re-send would
        be queued a second time.)
        """
        return self.publish_many_queues(
            {queue: jobs}, max_attempts=max_attempts, timeout_ms=timeout_ms,
            backoff_ms=backoff_ms, due_ms=due_ms, gid=gid, group_limit=group_limit,
            now_ms_override=now_ms_override, batch_size=batch_size, retry=retry,
        )[queue]  # fmt: skip

    def publish_many_queues(
        self,
        jobs_by_queue: Mapping[str, Iterable[Any]],
        *,
        max_attempts: int = 3,
        timeout_ms: int = 30000,
        backoff_ms: int = 5000,
        due_ms: int = 0,
        gid: Optional[str] = None,
        group_limit: int = 0,
        now_ms_override: int = 0,
        batch_size: int = 500,
        retry: int = 0,
    ) -> dict[str, list[str]]:
        """:meth:`publish_many` for several queues at once: ``{queue: jobs}`` in, ``{queue:
        ids}`` out.

        On a Redis Cluster each queue's batches go to the master owning it, one pipeline
        per master, the masters in parallel; queues on one node share its connection.
        If the cluster moves a queue meanwhile, its batches follow it (a redirected batch
        did not run, and is sent again to the new owner). A :class:`PublishManyError`
        lists the written, unknown, duplicate and refused ids of every queue.
        """
        engine = self._engine
        run = PublishRun(
            self._core, jobs_by_queue,
            (max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit),
            batch_size, retry, lambda: self._now(now_ms_override), engine.wake_command,
            threading.Lock(),  # replies are booked from one thread per cluster node
        )  # fmt: skip
        return publish_many(engine, run)

    # ------------------------------------------------------------------ consuming

    def reserve(self, queue: str, *, now_ms_override: int = 0) -> ReserveResult:
        """Lease the next job: ``ReservedJob``, ``Paused`` if the queue is paused, or
        ``None`` when nothing is ready."""
        return self._engine.run(calls.reserve(self._core, queue, self._now(now_ms_override)))

    def heartbeat(
        self, queue: str, job_id: str, lease_token: str, *, now_ms_override: int = 0
    ) -> int:
        """Extend a lease; returns the new ``lock_until_ms``.

        Raises :class:`~omniq_fast.errors.TokenRequired`, ``TokenMismatch`` or ``NotActive``
        when the lease is not this caller's any more.
        """
        now = self._now(now_ms_override)
        return self._engine.run(calls.heartbeat(self._core, queue, job_id, lease_token, now))

    def ack_success(
        self, queue: str, job_id: str, lease_token: str, *, now_ms_override: int = 0
    ) -> None:
        """Mark a leased job completed (lease errors as for :meth:`heartbeat`)."""
        now = self._now(now_ms_override)
        self._engine.run(calls.ack_success(self._core, queue, job_id, lease_token, now))

    def ack_fail(
        self,
        queue: str,
        job_id: str,
        lease_token: str,
        *,
        error: Optional[str] = None,
        now_ms_override: int = 0,
    ) -> AckFailResult:
        """Report a failed attempt: ``("RETRY", due_ms)`` or ``("FAILED", None)`` once
        ``max_attempts`` is used up. ``error`` (first 4096 bytes) is kept on the job."""
        now = self._now(now_ms_override)
        return self._engine.run(calls.ack_fail(self._core, queue, job_id, lease_token, error, now))

    def promote_delayed(
        self, queue: str, *, max_promote: int = 1000, now_ms_override: int = 0
    ) -> int:
        """Move up to ``max_promote`` due delayed jobs to their lane; returns how many."""
        now = self._now(now_ms_override)
        return self._engine.run(calls.promote_delayed(self._core, queue, max_promote, now))

    def reap_expired(self, queue: str, *, max_reap: int = 1000, now_ms_override: int = 0) -> int:
        """Retry (or fail) up to ``max_reap`` jobs whose lease expired; returns how many."""
        now = self._now(now_ms_override)
        return self._engine.run(calls.reap_expired(self._core, queue, max_reap, now))

    def job_timeout_ms(self, queue: str, job_id: str) -> int:
        """The job's ``timeout_ms`` (0 if the job or field is missing)."""
        return self._engine.run(calls.job_timeout_ms(self._core, queue, job_id))

    def reserve_many(
        self, queue: str, n: int, *, now_ms_override: int = 0
    ) -> Union[list[ReservedJob], Paused]:
        """Lease up to ``n`` jobs in one call, as ``n`` single reserves would (lane
        alternation, group limits); ``[]`` when nothing is ready, ``Paused`` if paused."""
        now = self._now(now_ms_override)
        return self._engine.run(calls.reserve_many(self._core, queue, n, now))

    def ack_success_many(
        self, queue: str, leases: Sequence[Lease], *, now_ms_override: int = 0
    ) -> list[JobResult]:
        """Ack many leased jobs as completed; one :class:`JobResult` per lease, in order
        (``"OK"``, or ``"ERR"`` with the lease error's reason). A lease is a
        ``ReservedJob`` or a ``(job_id, lease_token)`` pair."""
        now = self._now(now_ms_override)
        return self._engine.run_plan(
            calls.per_lease(self._core, "ack_success_batch", queue, leases, None, now, 1)
        )

    def ack_fail_many(
        self,
        queue: str,
        leases: Sequence[Lease],
        errors: Optional[Sequence[Optional[str]]] = None,
        *,
        now_ms_override: int = 0,
    ) -> list[JobResult]:
        """Report many failed attempts, ``errors[i]`` being lease ``i``'s error text (or
        ``None``). Results are ``"RETRY"`` (``ms`` = due time), ``"FAILED"`` or ``"ERR"``."""
        now = self._now(now_ms_override)
        if errors is None:
            errors = [None] * len(leases)
        return self._engine.run_plan(
            calls.per_lease(self._core, "ack_fail_batch", queue, leases, errors, now, 2)
        )

    def heartbeat_many(
        self, queue: str, leases: Sequence[Lease], *, now_ms_override: int = 0
    ) -> list[JobResult]:
        """Extend many leases; ``"OK"`` results carry the new ``lock_until_ms`` in ``ms``."""
        now = self._now(now_ms_override)
        return self._engine.run_plan(
            calls.per_lease(self._core, "heartbeat_batch", queue, leases, None, now, 2)
        )

    def release_many(
        self, queue: str, leases: Sequence[Lease], *, now_ms_override: int = 0
    ) -> list[JobResult]:
        """Give back leased jobs that were never started, as if they had not been reserved.

        For the graceful shutdown of a consumer that prefetches (``reserve_many``): the jobs
        it holds but has not begun go back to the head of their lanes, in their order, for
        any consumer to take at once, instead of sitting in ``active`` until their leases
        expire and ``reap_expired`` counts them as failed attempts (with their backoff).
        Pass the leases in the order they were reserved. Do not release a job whose handler
        ran: its effects would happen again.

        One :class:`JobResult` per lease, in order: ``"OK"``, or ``"ERR"`` with the lease
        error's reason (``TOKEN_REQUIRED``, ``TOKEN_MISMATCH``, ``NOT_ACTIVE``), checked as
        ``ack_success`` checks it. The attempt count goes back down; what cannot be restored
        (which lane ``reserve`` tries first, the lease counter, ``groups:ready`` scores) is
        listed in ``omniq_fast/lua/release_batch.lua``.
        """
        now = self._now(now_ms_override)
        return self._engine.run_plan(calls.release_many(self._core, queue, leases, now))

    # ------------------------------------------------------------------ pause

    def pause(self, queue: str) -> str:
        """Stop handing out jobs (running jobs go on); returns ``"OK"``."""
        return self._engine.run(calls.pause(self._core, queue))

    def resume(self, queue: str) -> int:
        """Hand out jobs again; returns 1 if the queue was paused, else 0."""
        return self._engine.run(calls.resume(self._core, queue))

    def is_paused(self, queue: str) -> bool:
        """Whether the queue is paused (a plain EXISTS, no script)."""
        return self._engine.run(calls.is_paused(self._core, queue))

    # ------------------------------------------------------------------ admin

    def retry_failed(self, queue: str, job_id: str, *, now_ms_override: int = 0) -> None:
        """Queue a failed job again with its attempts reset.

        Raises :class:`~omniq_fast.errors.AdminError` with reason ``NO_JOB`` or
        ``NOT_FAILED``.
        """
        now = self._now(now_ms_override)
        self._engine.run(calls.retry_failed(self._core, queue, job_id, now))

    def retry_failed_batch(
        self, queue: str, job_ids: Sequence[str], *, now_ms_override: int = 0
    ) -> list[BatchResultItem]:
        """:meth:`retry_failed` for up to 100 ids in one call; one result per id."""
        now = self._now(now_ms_override)
        call = calls.retry_failed_batch(self._core, queue, job_ids, now)
        return [] if call is None else self._engine.run(call)

    def remove_job(self, queue: str, job_id: str, lane: str) -> str:
        """Delete a job that is not running from ``lane`` (``wait``, ``delayed``,
        ``failed``, ``completed`` or ``gwait`` for grouped waiting jobs); returns ``"OK"``
        (as the official SDK does).

        Raises :class:`~omniq_fast.errors.AdminError` with reason ``NO_JOB``, ``ACTIVE``,
        ``LANE_MISMATCH`` or ``NOT_IN_LANE``.
        """
        return self._engine.run(calls.remove_job(self._core, queue, job_id, lane))

    def remove_jobs_batch(
        self, queue: str, lane: str, job_ids: Sequence[str]
    ) -> list[BatchResultItem]:
        """:meth:`remove_job` for up to 100 ids in one call; one result per id."""
        call = calls.remove_jobs_batch(self._core, queue, lane, job_ids)
        return [] if call is None else self._engine.run(call)

    # ------------------------------------------------------------------ fan-out counters

    def childs_init(self, key: str, expected: int) -> None:
        """Start a completion counter ``key`` expecting ``expected`` children.

        Raises :class:`~omniq_fast.errors.AdminError` (``ALREADY_INIT``) if it exists.
        """
        self._engine.run(calls.childs_init(self._core, key, expected))

    def child_ack(self, key: str, child_id: str) -> int:
        """Count child ``child_id`` as done; returns how many remain.

        The last child gets 0 exactly once; a repeated ack of the same child does not
        count twice. Any server-side error (no counter, already finished) returns -1 and
        never raises, so a retried child cannot trigger the completion twice.
        """
        return self._engine.run(calls.child_ack(self._core, key, child_id))

    # ------------------------------------------------------------------ consumer

    def consume(
        self,
        queue: Union[str, Sequence[str]],
        handler: "Handler",
        *,
        poll_interval_s: float = 0.05,
        promote_interval_s: float = 1.0,
        promote_batch: int = 1000,
        reap_interval_s: float = 1.0,
        reap_batch: int = 1000,
        heartbeat_interval_s: Optional[float] = None,
        verbose: bool = False,
        logger: "LineLogger" = print,
        drain: bool = True,
        stop_on_ctrl_c: bool = True,
        max_jobs: Optional[int] = None,
        concurrency: int = 1,
        prefetch: Optional[int] = None,
        ack_delay_s: float = 0.002,
        wake: bool = True,
        observer: Optional["ConsumerObserver"] = None,
        tracebacks: bool = True,
        burst: bool = False,
    ) -> "ConsumerStats":
        """Consume ``queue`` with ``handler`` until stopped; see :class:`omniq_fast.Consumer`
        for the options and the stop rules.

        ``queue`` may be a list of queues: each gets a consumer of its own with these
        options (``concurrency`` and ``max_jobs`` are per queue), all stopped together;
        see :class:`omniq_fast.MultiConsumer`. The counts returned are summed."""
        from .consumer import Consumer
        from .multiqueue import MultiConsumer

        kind: Any = Consumer if isinstance(queue, str) else MultiConsumer
        return kind(  # type: ignore[no-any-return]
            self, queue, handler, poll_interval_s=poll_interval_s,
            promote_interval_s=promote_interval_s, promote_batch=promote_batch,
            reap_interval_s=reap_interval_s, reap_batch=reap_batch,
            heartbeat_interval_s=heartbeat_interval_s, verbose=verbose, logger=logger,
            drain=drain, stop_on_ctrl_c=stop_on_ctrl_c, max_jobs=max_jobs,
            concurrency=concurrency, prefetch=prefetch, ack_delay_s=ack_delay_s, wake=wake,
            observer=observer, tracebacks=tracebacks, burst=burst,
        ).run()  # fmt: skip


class OmniqClient(Client):
    """Drop-in replacement for ``omniq.client.OmniqClient``.

    Same constructor keywords and the same methods with the same keyword names and return
    shapes: switching is a change of one import.
    """

    def __init__(
        self,
        *,
        redis: Optional[redis_py.Redis] = None,
        host: Optional[str] = None,
        port: int = 6379,
        db: int = 0,
        username: Optional[str] = None,
        password: Optional[str] = None,
        ssl: bool = False,
        scripts_dir: Optional[str] = None,
        client_name: Optional[str] = None,
        _core: Optional[ModuleType] = None,
    ) -> None:
        if scripts_dir is not None:
            warnings.warn(
                "omniq-fast runs its own scripts; scripts_dir is ignored",
                RuntimeWarning,
                stacklevel=2,
            )
        if redis is not None:
            super().__init__(redis=redis, _core=_core)
            return
        super().__init__(
            None,
            host=host or "localhost",
            port=port,
            db=db,
            username=username,
            password=password,
            ssl=ssl,
            client_name=client_name,
            _core=_core,
        )
