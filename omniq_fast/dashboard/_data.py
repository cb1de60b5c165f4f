"""Every Redis access of the dashboard, as coroutines.

Today these run the blocking :class:`~omniq_fast.Client` and
:class:`~omniq_fast.monitor.QueueMonitor` in Starlette's threadpool. When the asyncio client
and ``AsyncQueueMonitor`` exist, this module is the one to change: the pages, actions and
sampler only ever await :class:`DashboardData`'s methods.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional, TypeVar

from starlette.concurrency import run_in_threadpool

from ..client import Client
from ..monitor import (
    CounterStatus,
    GroupReady,
    GroupsPage,
    GroupStatus,
    JobInfo,
    Lane,
    LaneJob,
    QueueActivity,
    QueueMonitor,
    QueueStats,
)

__all__ = ["DashboardData", "RETRY_ALL_MAX"]

_T = TypeVar("_T")

#: "Retry all failed" retries at most this many jobs per click (100 per script call), so
#: one request stays short on a queue with a million failed jobs; the page says how many
#: are left.
RETRY_ALL_MAX = 10_000
_BATCH = 100


class DashboardData:
    """The dashboard's reads and actions on one server or cluster."""

    def __init__(self, client: Client, *, owns_client: bool) -> None:
        self._client = client
        self._owns_client = owns_client
        self._monitor = QueueMonitor(client)
        # The client's own transport is one connection: actions from concurrent requests
        # take turns. The monitor reads through redis-py's pool and need no lock.
        self._actions = threading.Lock()

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    @staticmethod
    async def _run(fn: Callable[..., _T], *args: Any) -> _T:
        return await run_in_threadpool(fn, *args)

    async def _act(self, fn: Callable[..., _T], *args: Any) -> _T:
        def locked() -> _T:
            with self._actions:
                return fn(*args)

        return await run_in_threadpool(locked)

    # ------------------------------------------------------------------ reads

    async def queue_names(self) -> list[str]:
        return await self._run(self._monitor.scan_queues)

    async def stats(self, queue: str) -> QueueStats:
        return await self._run(self._monitor.stats, queue)

    async def activity(
        self, queues: list[str], marks: dict[str, tuple[int, int]]
    ) -> list[QueueActivity]:
        return await self._run(self._monitor.activity, queues, marks)

    async def lane_sizes(self, queue: str) -> dict[str, int]:
        return await self._run(self._monitor.lane_sizes, queue)

    async def lane_page(
        self, queue: str, lane: Lane, offset: int, limit: int, newest_first: bool
    ) -> list[LaneJob]:
        return await self._run(self._monitor.lane_page, queue, lane, offset, limit, newest_first)

    async def find_jobs(self, queue: str, lane: Lane, job_ids: list[str]) -> list[LaneJob]:
        return await self._run(self._monitor.find_jobs, queue, lane, job_ids)

    async def ready_groups(self, queue: str, offset: int, limit: int) -> list[GroupReady]:
        return await self._run(self._monitor.groups_ready_with_scores, queue, offset, limit)

    async def groups_page(self, queue: str, cursor: str, limit: int) -> GroupsPage:
        return await self._run(self._monitor.groups_page, queue, cursor, limit)

    async def group_status(self, queue: str, gids: list[str]) -> list[GroupStatus]:
        return await self._run(self._monitor.group_status, queue, gids)

    async def group_wait_page(
        self, queue: str, gid: str, offset: int, limit: int
    ) -> list[LaneJob]:
        return await self._run(self._monitor.group_wait_page, queue, gid, offset, limit)

    async def job(self, queue: str, job_id: str) -> Optional[JobInfo]:
        return await self._run(self._monitor.get_job, queue, job_id)

    async def counter(self, key: str) -> CounterStatus:
        return await self._run(self._monitor.counter, key)

    # ------------------------------------------------------------------ actions

    async def pause(self, queue: str) -> None:
        await self._act(self._client.pause, queue)

    async def resume(self, queue: str) -> None:
        await self._act(self._client.resume, queue)

    async def retry(self, queue: str, job_id: str) -> None:
        await self._act(self._client.retry_failed, queue, job_id)

    async def remove(self, queue: str, job_id: str, lane: str) -> None:
        await self._act(self._client.remove_job, queue, job_id, lane)

    async def retry_all_failed(self, queue: str) -> tuple[int, int]:
        """Retry failed jobs, oldest first, up to :data:`RETRY_ALL_MAX`; returns
        (retried, still failed)."""
        return await self._act(self._retry_all_failed, queue)

    def _retry_all_failed(self, queue: str) -> tuple[int, int]:
        retried = 0
        while retried < RETRY_ALL_MAX:
            # Always the head of the index: retried ids leave it, so no offset is needed.
            ids = [j.job_id for j in self._monitor.lane_page(queue, "failed", 0, 25)]
            ids += [j.job_id for j in self._monitor.lane_page(queue, "failed", 25, 25)]
            if not ids:
                break
            results = self._client.retry_failed_batch(queue, ids[:_BATCH])
            done = sum(1 for item in results if item.status == "OK")
            retried += done
            if not done:  # every id refused (not failed any more): nothing left to do
                break
        return retried, self._monitor.lane_sizes(queue)["failed"]

