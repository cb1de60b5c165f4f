"""The asyncio client: :class:`AsyncClient`, every method of :class:`~omniq_fast.Client` as
a coroutine.

Each method builds the same pure :class:`~omniq_fast._protocol.calls.Call` the blocking
client builds (same checks, same bytes, same reading of the reply, same errors) and awaits
it on the :class:`~omniq_fast.aio._engine.AsyncEngine`. Calls made concurrently by many
tasks share one connection and are pipelined automatically: what one event-loop turn
submits goes out in one write.

The docstrings are the blocking client's own (the behaviour is the same), attached by
:func:`_same_as`.
"""

from __future__ import annotations

from types import ModuleType, TracebackType
from typing import (
    TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence, TypeVar, Union,
)  # fmt: skip

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from .._engine import now_ms
from .._protocol import calls
from .._protocol.coalesce import checked_item
from .._protocol.streams import PublishRun
from ..client import Client
from ..keys import queue_base
from .._options import MAX_EPOCH_MS, check_int
from ..types import AckFailResult, BatchResultItem, JobResult, Paused, ReservedJob, ReserveResult
from ._coalesce import Coalescer
from ._engine import AsyncEngine
from ._publish import publish_many

if TYPE_CHECKING:
    from ..consumer import ConsumerStats, LineLogger
    from .consumer import AsyncHandler
    from ..observe import ConsumerObserver

__all__ = ["AsyncClient"]

F = TypeVar("F", bound=Callable[..., Any])
_Self = TypeVar("_Self", bound="AsyncClient")
Lease = calls.Lease


def _same_as(sync: Callable[..., Any]) -> Callable[[F], F]:
    """Give the coroutine the blocking method's docstring: one text for one behaviour."""

    def attach(method: F) -> F:
        method.__doc__ = sync.__doc__
        return method

    return attach


class AsyncClient:
    """An asyncio connection to one OmniQ server (Redis or Valkey) or one Redis Cluster,
    and every queue operation, as coroutines with the names, arguments, results and errors
    of :class:`~omniq_fast.Client`.

    ``url`` is a redis-py URL (``redis://``, ``rediss://`` for TLS, ``unix://``), with ACL
    user and password in it if needed; or pass a ready ``redis.asyncio.Redis`` as
    ``redis=``. Extra keyword arguments go to ``redis.asyncio.Redis.from_url``; the
    timeouts default as for :class:`~omniq_fast.Client` (``socket_connect_timeout=5``,
    ``socket_timeout=30``). Use ``async with`` or ``await close()``.

    Concurrent calls from many tasks share one connection and are pipelined: each
    event-loop turn's calls go out in one write. A lost connection fails exactly the calls
    whose bytes were sent with :class:`~omniq_fast.errors.ConnectionLost` (their effect is
    unknown); the next call reconnects.

    Redis Cluster works as with :class:`~omniq_fast.Client`: found on first use
    (``INFO cluster``), or forced with ``cluster=True`` (``False`` skips the check), or
    given as ``redis=`` a ``redis.asyncio.cluster.RedisCluster``. Each call goes to the
    master of its queue's slot, on one pipelined connection per master; redirections,
    migrations and failovers are followed by the blocking client's rules, waiting at most
    ``cluster_retry_s`` before :class:`~omniq_fast.errors.ClusterUnavailable` (the call
    did not run).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        redis: Optional[Union[aredis.Redis, AsyncRedisCluster]] = None,
        client_name: Optional[str] = None,
        cluster: Optional[bool] = None,
        cluster_retry_s: float = 10.0,
        _core: Optional[ModuleType] = None,
        **redis_options: Any,
    ) -> None:
        self._engine = AsyncEngine(
            url, redis, client_name, cluster, cluster_retry_s, _core, redis_options
        )
        self._core: ModuleType = self._engine.core
        self._coalescer = Coalescer(self._engine)

    # ------------------------------------------------------------------ lifecycle

    @property
    def redis(self) -> Any:
        """The underlying ``redis.asyncio.Redis`` (for plain reads and monitoring), or in
        cluster mode (once known: after the first call, or from ``cluster=True`` or a
        ``RedisCluster`` given) a ``redis.asyncio.cluster.RedisCluster``."""
        return self._engine.redis

    @property
    def is_cluster(self) -> bool:
        """Whether the client runs in cluster mode (known after the first call, unless
        ``cluster=`` or a ``RedisCluster`` said so)."""
        return self._engine.is_cluster

    async def close(self) -> None:
        """Close the connections this client opened (not a ``redis=`` it was given)."""
        await self._coalescer.close()  # publishes on their way still get their outcomes
        await self._engine.close()

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    @staticmethod
    @_same_as(Client.queue_base)
    def queue_base(queue_name: str) -> str:
        return queue_base(queue_name)

    @staticmethod
    def _now(now_ms_override: int) -> int:
        check_int("now_ms_override", now_ms_override, 0, MAX_EPOCH_MS)
        return now_ms_override or now_ms()

    # ------------------------------------------------------------------ producing

    @_same_as(Client.publish)
    async def publish(
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
        if now_ms_override:
            call = calls.publish(
                self._core, queue, payload, job_id, max_attempts, timeout_ms, backoff_ms,
                due_ms, gid, group_limit, self._now(now_ms_override),
            )  # fmt: skip
            return await self._engine.run(call)
        # Publishes awaited in the same loop turn go to the server as one enqueue_batch
        # call per queue (omniq_fast._protocol.coalesce): the same keyspace, one script run.
        # Checked and encoded here, in the caller (a bad argument raises in it, and nothing
        # of it is sent); the batch only joins the encoded parts.
        coalescer = self._coalescer
        anchor, the_id, part = checked_item(
            self._core, coalescer.tails, queue, payload, job_id, max_attempts, timeout_ms,
            backoff_ms, due_ms, gid, group_limit,
        )  # fmt: skip
        return await coalescer.submit(queue, anchor, the_id, part)

    publish_json = publish

    @_same_as(Client.publish_many)
    async def publish_many(
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
        written = await self.publish_many_queues(
            {queue: jobs}, max_attempts=max_attempts, timeout_ms=timeout_ms,
            backoff_ms=backoff_ms, due_ms=due_ms, gid=gid, group_limit=group_limit,
            now_ms_override=now_ms_override, batch_size=batch_size, retry=retry,
        )  # fmt: skip
        return written[queue]

    @_same_as(Client.publish_many_queues)
    async def publish_many_queues(
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
        engine = self._engine
        run = PublishRun(
            self._core, jobs_by_queue,
            (max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit),
            batch_size, retry, lambda: self._now(now_ms_override), engine.wake_command,
        )  # fmt: skip
        return await publish_many(engine, run)

    # ------------------------------------------------------------------ consuming

    @_same_as(Client.reserve)
    async def reserve(self, queue: str, *, now_ms_override: int = 0) -> ReserveResult:
        now = self._now(now_ms_override)
        return await self._engine.run(calls.reserve(self._core, queue, now))

    @_same_as(Client.heartbeat)
    async def heartbeat(
        self, queue: str, job_id: str, lease_token: str, *, now_ms_override: int = 0
    ) -> int:
        now = self._now(now_ms_override)
        return await self._engine.run(calls.heartbeat(self._core, queue, job_id, lease_token, now))

    @_same_as(Client.ack_success)
    async def ack_success(
        self, queue: str, job_id: str, lease_token: str, *, now_ms_override: int = 0
    ) -> None:
        now = self._now(now_ms_override)
        call = calls.ack_success(self._core, queue, job_id, lease_token, now)
        await self._engine.run(call)

    @_same_as(Client.ack_fail)
    async def ack_fail(
        self,
        queue: str,
        job_id: str,
        lease_token: str,
        *,
        error: Optional[str] = None,
        now_ms_override: int = 0,
    ) -> AckFailResult:
        now = self._now(now_ms_override)
        call = calls.ack_fail(self._core, queue, job_id, lease_token, error, now)
        return await self._engine.run(call)

    @_same_as(Client.promote_delayed)
    async def promote_delayed(
        self, queue: str, *, max_promote: int = 1000, now_ms_override: int = 0
    ) -> int:
        now = self._now(now_ms_override)
        return await self._engine.run(calls.promote_delayed(self._core, queue, max_promote, now))

    @_same_as(Client.reap_expired)
    async def reap_expired(
        self, queue: str, *, max_reap: int = 1000, now_ms_override: int = 0
    ) -> int:
        now = self._now(now_ms_override)
        return await self._engine.run(calls.reap_expired(self._core, queue, max_reap, now))

    @_same_as(Client.job_timeout_ms)
    async def job_timeout_ms(self, queue: str, job_id: str) -> int:
        return await self._engine.run(calls.job_timeout_ms(self._core, queue, job_id))

    # ------------------------------------------------------------------ pause

    @_same_as(Client.pause)
    async def pause(self, queue: str) -> str:
        return await self._engine.run(calls.pause(self._core, queue))

    @_same_as(Client.resume)
    async def resume(self, queue: str) -> int:
        return await self._engine.run(calls.resume(self._core, queue))

    @_same_as(Client.is_paused)
    async def is_paused(self, queue: str) -> bool:
        return await self._engine.run(calls.is_paused(self._core, queue))

    # ------------------------------------------------------------------ admin

    @_same_as(Client.retry_failed)
    async def retry_failed(self, queue: str, job_id: str, *, now_ms_override: int = 0) -> None:
        now = self._now(now_ms_override)
        await self._engine.run(calls.retry_failed(self._core, queue, job_id, now))

    @_same_as(Client.retry_failed_batch)
    async def retry_failed_batch(
        self, queue: str, job_ids: Sequence[str], *, now_ms_override: int = 0
    ) -> list[BatchResultItem]:
        now = self._now(now_ms_override)
        call = calls.retry_failed_batch(self._core, queue, job_ids, now)
        return [] if call is None else await self._engine.run(call)

    @_same_as(Client.remove_job)
    async def remove_job(self, queue: str, job_id: str, lane: str) -> str:
        return await self._engine.run(calls.remove_job(self._core, queue, job_id, lane))

    @_same_as(Client.remove_jobs_batch)
    async def remove_jobs_batch(
        self, queue: str, lane: str, job_ids: Sequence[str]
    ) -> list[BatchResultItem]:
        call = calls.remove_jobs_batch(self._core, queue, lane, job_ids)
        return [] if call is None else await self._engine.run(call)

    # ------------------------------------------------------------------ fan-out counters

    @_same_as(Client.childs_init)
    async def childs_init(self, key: str, expected: int) -> None:
        await self._engine.run(calls.childs_init(self._core, key, expected))

    @_same_as(Client.child_ack)
    async def child_ack(self, key: str, child_id: str) -> int:
        return await self._engine.run(calls.child_ack(self._core, key, child_id))

    # ------------------------------------------------------------------ many jobs per call

    @_same_as(Client.reserve_many)
    async def reserve_many(
        self, queue: str, n: int, *, now_ms_override: int = 0
    ) -> Union[list[ReservedJob], Paused]:
        now = self._now(now_ms_override)
        return await self._engine.run(calls.reserve_many(self._core, queue, n, now))

    @_same_as(Client.ack_success_many)
    async def ack_success_many(
        self, queue: str, leases: Sequence[Lease], *, now_ms_override: int = 0
    ) -> list[JobResult]:
        return await self._per_lease("ack_success_batch", queue, leases, None, now_ms_override, 1)

    @_same_as(Client.ack_fail_many)
    async def ack_fail_many(
        self,
        queue: str,
        leases: Sequence[Lease],
        errors: Optional[Sequence[Optional[str]]] = None,
        *,
        now_ms_override: int = 0,
    ) -> list[JobResult]:
        if errors is None:
            errors = [None] * len(leases)
        return await self._per_lease("ack_fail_batch", queue, leases, errors, now_ms_override, 2)

    @_same_as(Client.heartbeat_many)
    async def heartbeat_many(
        self, queue: str, leases: Sequence[Lease], *, now_ms_override: int = 0
    ) -> list[JobResult]:
        return await self._per_lease("heartbeat_batch", queue, leases, None, now_ms_override, 2)

    @_same_as(Client.release_many)
    async def release_many(
        self, queue: str, leases: Sequence[Lease], *, now_ms_override: int = 0
    ) -> list[JobResult]:
        now = self._now(now_ms_override)
        return await self._engine.run_plan(calls.release_many(self._core, queue, leases, now))

    async def _per_lease(
        self,
        name: str,
        queue: str,
        leases: Sequence[Lease],
        errors: Optional[Sequence[Optional[str]]],
        now_ms_override: int,
        width: int,
    ) -> list[JobResult]:
        now = self._now(now_ms_override)
        plan = calls.per_lease(self._core, name, queue, leases, errors, now, width)
        return await self._engine.run_plan(plan)

    # ------------------------------------------------------------------ consumer

    @_same_as(Client.consume)
    async def consume(
        self,
        queue: Union[str, Sequence[str]],
        handler: "AsyncHandler",
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
        from .consumer import AsyncConsumer
        from .multiqueue import AsyncMultiConsumer

        kind: Any = AsyncConsumer if isinstance(queue, str) else AsyncMultiConsumer
        stats: ConsumerStats = await kind(
            self, queue, handler, poll_interval_s=poll_interval_s,
            promote_interval_s=promote_interval_s, promote_batch=promote_batch,
            reap_interval_s=reap_interval_s, reap_batch=reap_batch,
            heartbeat_interval_s=heartbeat_interval_s, verbose=verbose, logger=logger,
            drain=drain, stop_on_ctrl_c=stop_on_ctrl_c, max_jobs=max_jobs,
            concurrency=concurrency, prefetch=prefetch, ack_delay_s=ack_delay_s, wake=wake,
            observer=observer, tracebacks=tracebacks, burst=burst,
        ).run()  # fmt: skip
        return stats
