"""Read-only monitoring of OmniQ queues: counters, ready groups and pages of jobs.

:class:`QueueMonitor` returns what the official SDK's ``omniq.monitor.QueueMonitor``
returns for the same Redis data (same models, fields and edge cases), but batches its reads:
a page of jobs takes two round trips instead of two per job, an overview two in all.

This is the blocking shell: every view is a plan of :mod:`omniq_fast._protocol.monitor`
(which reads to send, what the replies mean, and the behaviours kept from the official
monitor), run here on redis-py pipelines. :class:`omniq_fast.aio.monitor.AsyncQueueMonitor`
runs the same plans on ``redis.asyncio``.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Optional, Protocol, Sequence, TypeVar, Union

import redis
from redis.client import NEVER_DECODE
from redis.cluster import RedisCluster

from ._protocol import monitor as plans
from ._protocol.monitor_models import (
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

__all__ = [
    "Lane", "QueueStats", "GroupReady", "GroupStatus", "JobInfo", "LaneJob", "QueueOverview",
    "GroupsPage", "QueueActivity", "CounterStatus", "QueueMonitor",
]

_T = TypeVar("_T")
#: Replies come back undecoded, whatever the connection's ``decode_responses`` (see
#: :mod:`omniq_fast._protocol.monitor`).
_RAW: dict[str, Any] = {NEVER_DECODE: []}


class _HasRedis(Protocol):
    @property
    def redis(self) -> redis.Redis: ...


class QueueMonitor:
    """Read-only views of queues for dashboards and operators.

    ``source`` is a ``redis.Redis`` or ``RedisCluster``, or anything exposing one as
    ``.redis`` (an omniq-fast client); its ``decode_responses`` setting does not matter.
    Nothing here writes. On a cluster, reads of a queue go to its master (pipelines are
    split by node) and :meth:`scan_queues` scans every master.
    """

    __slots__ = ("_redis",)

    def __init__(self, source: Union[redis.Redis, RedisCluster, _HasRedis]) -> None:
        self._redis: Any = (
            source if isinstance(source, (redis.Redis, RedisCluster)) else source.redis
        )

    def scan_queues(self) -> list[str]:
        """Names of the queues that have a stats hash, sorted, each once."""
        servers = self._servers()
        return self._run(plans.scan_queues(len(servers)), servers)

    def stats(self, queue: str) -> QueueStats:
        """The counters of ``queue``; all zero when it has no stats hash."""
        return self._run(plans.stats(queue))

    def stats_many(self, queues: Optional[Iterable[str]] = None) -> list[QueueStats]:
        """Stats of ``queues`` in the order given (duplicates kept), or of every queue
        :meth:`scan_queues` finds when ``queues`` is ``None``."""
        servers = self._servers() if queues is None else []
        return self._run(plans.stats_many(queues, len(servers)), servers)

    def oldest_waiting_ms(self, queues: Iterable[str]) -> list[Optional[int]]:
        """For each queue (in order), when its oldest waiting job entered the wait lane
        (ms, from ``idx:wait``; grouped jobs included), or ``None`` when none waits.

        Not in the official monitor: an operator's "how far behind is this queue"."""
        return self._run(plans.oldest_waiting_ms(queues))

    def scan_groups(self, queue: str) -> list[str]:
        """Every group id of ``queue`` that has a key (a waiting list, an in-flight count
        or a limit), sorted; a SCAN of the queue's node. Not in the official monitor,
        which only lists ready groups."""
        return self._run(plans.scan_groups(queue))

    def oldest_waiting_age_ms(self, queue: str, now_ms: Optional[int] = None) -> int:
        """How long the longest-waiting job of ``queue`` (grouped or not) has been ready:
        ``now_ms`` (default: this clock) minus the time it entered the wait lane
        (published, or promoted when due); 0 when nothing waits."""
        return self.oldest_waiting_ages_ms([queue], now_ms)[0]

    def oldest_waiting_ages_ms(
        self, queues: Iterable[str], now_ms: Optional[int] = None
    ) -> list[int]:
        """:meth:`oldest_waiting_age_ms` of each of ``queues``, in one round trip."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return self._run(plans.oldest_waiting_ages_ms(queues, now))

    def grouped_active_many(self, queues: Iterable[str]) -> list[int]:
        """How many leased jobs of each of ``queues`` belong to a group, in two round
        trips; it reads every id of the active lane (as many as the workers hold)."""
        return self._run(plans.grouped_active_many(queues))

    def groups_ready(self, queue: str, offset: int = 0, limit: int = 200) -> list[str]:
        """Group ids of ``{Q}:groups:ready``, lowest score first."""
        return self._run(plans.groups_ready(queue, offset, limit))

    def groups_ready_with_scores(
        self, queue: str, offset: int = 0, limit: int = 200
    ) -> list[GroupReady]:
        """Ready groups with the time they became ready, lowest score first."""
        return self._run(plans.groups_ready_with_scores(queue, offset, limit))

    def group_status(
        self, queue: str, gids: Iterable[str], default_limit: int = 1
    ) -> list[GroupStatus]:
        """In-flight count, limit, queued jobs and readiness of each group in ``gids``.

        Empty gids are skipped. ``limit`` is the group's limit key when positive, else
        ``default_limit`` (at least 1); ``ready`` means the gid is in ``groups:ready``.
        """
        return self._run(plans.group_status(queue, gids, default_limit))

    def lane_page(
        self, queue: str, lane: Lane, offset: int = 0, limit: int = 25, reverse: bool = False
    ) -> list[LaneJob]:
        """Up to ``limit`` (at most 25) jobs of ``lane`` by the time they entered it, oldest
        first (newest first with ``reverse``); jobs whose hash is gone are left out."""
        return self._run(plans.lane_page(queue, lane, offset, limit, reverse))

    def find_jobs(self, queue: str, lane: Lane, job_ids: Iterable[str]) -> list[LaneJob]:
        """The jobs of ``job_ids`` (in that order, duplicates kept) that are indexed in
        ``lane`` and still have a hash; empty ids are skipped."""
        return self._run(plans.find_jobs(queue, lane, job_ids))

    def get_job(self, queue: str, job_id: str) -> Optional[JobInfo]:
        """Every field of one job, or ``None`` if it does not exist (or is unreadable)."""
        return self._run(plans.get_job(queue, job_id))

    def get_jobs(self, queue: str, job_ids: Iterable[str]) -> list[Optional[JobInfo]]:
        """:meth:`get_job` for many ids in one round trip, in order (``None`` for a job
        that does not exist or is unreadable)."""
        return self._run(plans.get_jobs(queue, job_ids))

    def overview(self, queue: str, samples_per_lane: int = 10) -> QueueOverview:
        """Stats plus the first ``samples_per_lane`` (1..25) ready groups and the oldest
        jobs of the active, delayed, failed and completed lanes, in two round trips."""
        return self._run(plans.overview(queue, samples_per_lane))

    def lane_sizes(self, queue: str) -> dict[str, int]:
        """How many jobs each ``idx:<lane>`` zset holds (the lengths job pages page through),
        plus ``gwait``: how many groups are ready."""
        return self._run(plans.lane_sizes(queue))

    def activity(
        self, queues: Iterable[str], marks: Optional[dict[str, tuple[int, int]]] = None
    ) -> list[QueueActivity]:
        """Sample ``queues`` in one pipeline (see :class:`QueueActivity`).

        ``marks`` maps a queue to (completed mark, failed mark), entry times in ms: jobs
        counted are those whose ``idx:completed`` / ``idx:failed`` score is above it (a
        missing mark counts nothing, so a first sample only sets the marks). The completed
        lane keeps the 100 newest jobs, so ``completed_since`` cannot exceed 100.
        """
        return self._run(plans.activity(queues, marks))

    def groups_page(
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
        return self._run(plans.groups_page(queue, cursor, limit, default_limit))

    def group_wait_page(
        self, queue: str, gid: str, offset: int = 0, limit: int = 25
    ) -> list[LaneJob]:
        """Up to ``limit`` (1..200) jobs of group ``gid``'s wait list, in the order they
        will run; ``idx_score_ms`` is when each entered the wait lane."""
        return self._run(plans.group_wait_page(queue, gid, offset, limit))

    def counter(self, key: str) -> CounterStatus:
        """The completion counter ``key`` (PROTOCOL.md §5 childs_init/child_ack); a
        finished or never-started counter does not exist."""
        return self._run(plans.counter(key))
    # ---------------------------------------------------------------- running plans

    def _run(self, plan: plans.Plan[_T], servers: Sequence[Any] = ()) -> _T:
        """Send each step of ``plan`` and hand it the replies, until it returns."""
        reply: Any = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, plans.Batch):
                    reply = self._batch(step)
                else:
                    reply = self._scan(step, servers)
        except StopIteration as done:
            result: _T = done.value
            return result

    def _batch(self, batch: plans.Batch) -> list[Any]:
        # No MULTI/EXEC: independent reads gain nothing from it but two more commands
        # and a server blocked for the whole batch.
        pipe = self._redis.pipeline(transaction=False)
        for command in batch.commands:
            pipe.execute_command(*command, **_RAW)
        return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    def _scan(self, scan: plans.Scan, servers: Sequence[Any]) -> Any:
        server = servers[scan.server] if scan.node_of is None else self._server_of(scan.node_of)
        return server.execute_command(*scan.command, **_RAW)

    def _servers(self) -> list[Any]:
        """The servers holding keys: the one server, or every master of a cluster."""
        if isinstance(self._redis, RedisCluster):
            primaries = self._redis.get_primaries()  # type: ignore[no-untyped-call]
            return [self._redis.get_redis_connection(n) for n in primaries]
        return [self._redis]

    def _server_of(self, key: str) -> Any:
        """The one server holding ``key``: itself, or the cluster master of its slot."""
        if isinstance(self._redis, RedisCluster):
            node = self._redis.get_node_from_key(key)  # type: ignore[no-untyped-call]
            return self._redis.get_redis_connection(node)
        return self._redis
