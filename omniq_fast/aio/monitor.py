"""Read-only monitoring of OmniQ queues on asyncio: :class:`AsyncQueueMonitor`.

The same views as :class:`omniq_fast.monitor.QueueMonitor` (same names, signatures, models
and answers), every method a coroutine: both shells run the plans of
:mod:`omniq_fast._protocol.monitor`, this one on ``redis.asyncio`` pipelines.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Optional, Protocol, Sequence, TypeVar, Union

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.client import NEVER_DECODE

from .._protocol import monitor as plans
from .._protocol.monitor_models import (
    CounterStatus,
    GroupReady,
    GroupsPage,
    GroupStatus,
    JobInfo,
    Lane,
    LaneJob,
    QueueActivity,
    QueueOverview,
    QueueStats,
)

__all__ = ["AsyncQueueMonitor"]

_T = TypeVar("_T")
#: Replies come back undecoded, whatever the connection's ``decode_responses`` (see
#: :mod:`omniq_fast._protocol.monitor`).
_RAW: dict[str, Any] = {NEVER_DECODE: []}


class _HasRedis(Protocol):
    @property
    def redis(self) -> Union[aioredis.Redis, RedisCluster]: ...


class AsyncQueueMonitor:
    """Read-only views of queues for dashboards and operators, on asyncio.

    ``source`` is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``, or
    anything exposing one as ``.redis`` (an asyncio omniq-fast client); its
    ``decode_responses`` setting does not matter. Nothing here writes. On a cluster, reads
    of a queue go to its master (pipelines are split by node) and :meth:`scan_queues`
    scans every master. The monitor does not close ``source``.
    """

    __slots__ = ("_redis",)

    def __init__(self, source: Union[aioredis.Redis, RedisCluster, _HasRedis]) -> None:
        self._redis: Any = (
            source if isinstance(source, (aioredis.Redis, RedisCluster)) else source.redis
        )

    async def scan_queues(self) -> list[str]:
        """Names of the queues that have a stats hash, sorted, each once."""
        servers = await self._servers()
        return await self._run(plans.scan_queues(len(servers)), servers)

    async def stats(self, queue: str) -> QueueStats:
        """The counters of ``queue``; all zero when it has no stats hash."""
        return await self._run(plans.stats(queue))

    async def stats_many(self, queues: Optional[Iterable[str]] = None) -> list[QueueStats]:
        """Stats of ``queues`` in the order given (duplicates kept), or of every queue
        :meth:`scan_queues` finds when ``queues`` is ``None``."""
        servers = await self._servers() if queues is None else []
        return await self._run(plans.stats_many(queues, len(servers)), servers)

    async def oldest_waiting_ms(self, queues: Iterable[str]) -> list[Optional[int]]:
        """For each queue (in order), when its oldest waiting job entered the wait lane
        (ms, from ``idx:wait``; grouped jobs included), or ``None`` when none waits.

        Not in the official monitor: an operator's "how far behind is this queue"."""
        return await self._run(plans.oldest_waiting_ms(queues))

    async def scan_groups(self, queue: str) -> list[str]:
        """Every group id of ``queue`` that has a key (a waiting list, an in-flight count
        or a limit), sorted; a SCAN of the queue's node. Not in the official monitor,
        which only lists ready groups."""
        return await self._run(plans.scan_groups(queue))

    async def oldest_waiting_age_ms(self, queue: str, now_ms: Optional[int] = None) -> int:
        """How long the longest-waiting job of ``queue`` (grouped or not) has been ready:
        ``now_ms`` (default: this clock) minus the time it entered the wait lane
        (published, or promoted when due); 0 when nothing waits."""
        return (await self.oldest_waiting_ages_ms([queue], now_ms))[0]

    async def oldest_waiting_ages_ms(
        self, queues: Iterable[str], now_ms: Optional[int] = None
    ) -> list[int]:
        """:meth:`oldest_waiting_age_ms` of each of ``queues``, in one round trip."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return await self._run(plans.oldest_waiting_ages_ms(queues, now))

    async def grouped_active_many(self, queues: Iterable[str]) -> list[int]:
        """How many leased jobs of each of ``queues`` belong to a group, in two round
        trips; it reads every id of the active lane (as many as the workers hold)."""
        return await self._run(plans.grouped_active_many(queues))

    async def groups_ready(self, queue: str, offset: int = 0, limit: int = 200) -> list[str]:
        """Group ids of ``{Q}:groups:ready``, lowest score first."""
        return await self._run(plans.groups_ready(queue, offset, limit))

    async def groups_ready_with_scores(
        self, queue: str, offset: int = 0, limit: int = 200
    ) -> list[GroupReady]:
        """Ready groups with the time they became ready, lowest score first."""
        return await self._run(plans.groups_ready_with_scores(queue, offset, limit))

    async def group_status(
        self, queue: str, gids: Iterable[str], default_limit: int = 1
    ) -> list[GroupStatus]:
        """In-flight count, limit, queued jobs and readiness of each group in ``gids``.

        Empty gids are skipped. ``limit`` is the group's limit key when positive, else
        ``default_limit`` (at least 1); ``ready`` means the gid is in ``groups:ready``.
        """
        return await self._run(plans.group_status(queue, gids, default_limit))

    async def lane_page(
        self, queue: str, lane: Lane, offset: int = 0, limit: int = 25, reverse: bool = False
    ) -> list[LaneJob]:
        """Up to ``limit`` (at most 25) jobs of ``lane`` by the time they entered it, oldest
        first (newest first with ``reverse``); jobs whose hash is gone are left out."""
        return await self._run(plans.lane_page(queue, lane, offset, limit, reverse))

    async def find_jobs(self, queue: str, lane: Lane, job_ids: Iterable[str]) -> list[LaneJob]:
        """The jobs of ``job_ids`` (in that order, duplicates kept) that are indexed in
        ``lane`` and still have a hash; empty ids are skipped."""
        return await self._run(plans.find_jobs(queue, lane, job_ids))

    async def get_job(self, queue: str, job_id: str) -> Optional[JobInfo]:
        """Every field of one job, or ``None`` if it does not exist (or is unreadable)."""
        return await self._run(plans.get_job(queue, job_id))

    async def get_jobs(self, queue: str, job_ids: Iterable[str]) -> list[Optional[JobInfo]]:
        """:meth:`get_job` for many ids in one round trip, in order (``None`` for a job
        that does not exist or is unreadable)."""
        return await self._run(plans.get_jobs(queue, job_ids))

    async def overview(self, queue: str, samples_per_lane: int = 10) -> QueueOverview:
        """Stats plus the first ``samples_per_lane`` (1..25) ready groups and the oldest
        jobs of the active, delayed, failed and completed lanes, in two round trips."""
        return await self._run(plans.overview(queue, samples_per_lane))

    async def lane_sizes(self, queue: str) -> dict[str, int]:
        """How many jobs each ``idx:<lane>`` zset holds (the lengths job pages page through),
        plus ``gwait``: how many groups are ready."""
        return await self._run(plans.lane_sizes(queue))

    async def activity(
        self, queues: Iterable[str], marks: Optional[dict[str, tuple[int, int]]] = None
    ) -> list[QueueActivity]:
        """Sample ``queues`` in one pipeline (see :class:`QueueActivity`).

        ``marks`` maps a queue to (completed mark, failed mark), entry times in ms: jobs
        counted are those whose ``idx:completed`` / ``idx:failed`` score is above it (a
        missing mark counts nothing, so a first sample only sets the marks). The completed
        lane keeps the 100 newest jobs, so ``completed_since`` cannot exceed 100.
        """
        return await self._run(plans.activity(queues, marks))

    async def groups_page(
        self, queue: str, cursor: str = "", limit: int = 50, default_limit: int = 1
    ) -> GroupsPage:
        """Up to ``limit`` (1..200) groups of ``queue`` with their status, and the cursor
        of the next page (``""`` when the listing is complete).

        Groups have no index of their own (PROTOCOL.md §2), so this walks the queue's
        ``{Q}:g:*`` keys with SCAN on the server holding the queue: the order is Redis's
        hash-table order, stable while the keyspace does not change; a page costs a bounded
        number of SCAN calls (it may come back short, with a cursor, on a huge keyspace).
        A group is listed under the first of its keys that exists, in the order wait,
        inflight, limit, so a full walk lists each group once; as with SCAN, a group
        created or emptied during the walk may be missed or seen twice, and a resize of the
        server's keyspace table between two pages may list a group again.
        """
        return await self._run(plans.groups_page(queue, cursor, limit, default_limit))

    async def group_wait_page(
        self, queue: str, gid: str, offset: int = 0, limit: int = 25
    ) -> list[LaneJob]:
        """Up to ``limit`` (1..200) jobs of group ``gid``'s wait list, in the order they
        will run; ``idx_score_ms`` is when each entered the wait lane."""
        return await self._run(plans.group_wait_page(queue, gid, offset, limit))

    async def counter(self, key: str) -> CounterStatus:
        """The completion counter ``key`` (PROTOCOL.md §5 childs_init/child_ack); a
        finished or never-started counter does not exist."""
        return await self._run(plans.counter(key))
    # ---------------------------------------------------------------- running plans

    async def _run(self, plan: plans.Plan[_T], servers: Sequence[Any] = ()) -> _T:
        """Send each step of ``plan`` and hand it the replies, until it returns."""
        reply: Any = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, plans.Batch):
                    reply = await self._batch(step)
                else:
                    reply = await self._scan(step, servers)
        except StopIteration as done:
            result: _T = done.value
            return result

    async def _batch(self, batch: plans.Batch) -> list[Any]:
        # No MULTI/EXEC: independent reads gain nothing from it but two more commands
        # and a server blocked for the whole batch.
        pipe = self._redis.pipeline(transaction=False)
        for command in batch.commands:
            pipe.execute_command(*command, **_RAW)
        return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    async def _scan(self, scan: plans.Scan, servers: Sequence[Any]) -> Any:
        if scan.node_of is not None:
            server = await self._server_of(scan.node_of)
        else:
            server = servers[scan.server]
        return await server.execute_command(*scan.command, **_RAW)

    async def _servers(self) -> list[Any]:
        """The servers holding keys: the one server, or every master of a cluster (a
        ``ClusterNode`` runs a command on its own connection, unrouted)."""
        if isinstance(self._redis, RedisCluster):
            await self._redis.initialize()  # the node map is empty until first use
            return list(self._redis.get_primaries())
        return [self._redis]

    async def _server_of(self, key: str) -> Any:
        """The one server holding ``key``: itself, or the cluster master of its slot."""
        if isinstance(self._redis, RedisCluster):
            await self._redis.initialize()
            return self._redis.get_node_from_key(key)
        return self._redis
