"""Every Redis access of the dashboard, as coroutines.

Reads await :class:`~omniq_fast.AsyncQueueMonitor` on a ``redis.asyncio`` client to the
same server (or cluster) as the blocking :class:`~omniq_fast.Client`, with its connection
settings; actions still run that client in Starlette's threadpool, until an asyncio client
exists (then this module is the one to change: the pages, actions and sampler only ever
await :class:`DashboardData`'s methods).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Optional, TypeVar, Union

import redis
import redis.asyncio as aioredis
from redis.asyncio import connection as aio_connection
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from starlette.concurrency import run_in_threadpool

from ..aio.monitor import AsyncQueueMonitor
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
    QueueStats,
)

__all__ = ["DashboardData", "RETRY_ALL_MAX"]

_T = TypeVar("_T")

#: "Retry all failed" retries at most this many jobs per click (100 per script call), so
#: one request stays short on a queue with a million failed jobs; the page says how many
#: are left.
RETRY_ALL_MAX = 10_000
_BATCH = 100
#: Connection settings carried over to the asyncio client (the rest, such as a blocking
#: ``Retry`` object, belong to the blocking client's own machinery).
_SETTINGS = (
    "host", "port", "db", "path", "username", "password", "client_name", "protocol",
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "ssl_keyfile",
    "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_data", "ssl_check_hostname",
    "ssl_min_version", "ssl_ciphers",
)
_CONNECTION_CLASSES = ("Connection", "SSLConnection", "UnixDomainSocketConnection")

AsyncRedis = Union[aioredis.Redis, AsyncRedisCluster]


def async_twin(conn: Union[redis.Redis, RedisCluster]) -> AsyncRedis:
    """A ``redis.asyncio`` client to the server or cluster ``conn`` talks to, with its
    address, credentials, TLS and timeouts."""
    if isinstance(conn, RedisCluster):
        kwargs = conn.nodes_manager.connection_kwargs
        settings = {k: kwargs[k] for k in _SETTINGS if k in kwargs and k not in
                    ("host", "port", "db", "path")}
        ssl = getattr(kwargs.get("connection_class"), "__name__", "") == "SSLConnection"
        known = conn.get_nodes()  # type: ignore[no-untyped-call]
        nodes = [ClusterNode(node.host, node.port) for node in known]
        return AsyncRedisCluster(startup_nodes=nodes, ssl=ssl, **settings)
    pool = conn.connection_pool
    name = pool.connection_class.__name__
    if name not in _CONNECTION_CLASSES:
        raise TypeError(f"the dashboard cannot read through a {name}")
    kwargs = pool.connection_kwargs
    settings = {k: kwargs[k] for k in _SETTINGS if k in kwargs}
    return aioredis.Redis(connection_pool=aio_connection.ConnectionPool(
        connection_class=getattr(aio_connection, name), **settings
    ))


class DashboardData:
    """The dashboard's reads and actions on one server or cluster."""

    def __init__(self, client: Client, *, owns_client: bool) -> None:
        self._client = client
        self._owns_client = owns_client
        self._redis = client.redis  # on a first use, this asks whether it is a cluster
        # asyncio connections belong to the loop that opened them: one reader per loop
        # (one in production; a test client may run each request on a loop of its own).
        self._readers: dict[asyncio.AbstractEventLoop, tuple[AsyncQueueMonitor, AsyncRedis]] = {}
        # The client's own transport is one connection: actions from concurrent requests
        # take turns. The monitor reads through its own pool and needs no lock.
        self._actions = threading.Lock()

    @property
    def _monitor(self) -> AsyncQueueMonitor:
        loop = asyncio.get_running_loop()
        reader = self._readers.get(loop)
        if reader is None:
            # A closed loop's connections cannot be closed on it any more: dropped, the
            # garbage collector closes their sockets.
            for closed in [other for other in self._readers if other.is_closed()]:
                del self._readers[closed]
            conn = async_twin(self._redis)
            reader = self._readers[loop] = (AsyncQueueMonitor(conn), conn)
        return reader[0]

    async def close(self) -> None:
        """Close this loop's reader, and the client if the dashboard opened it."""
        reader = self._readers.pop(asyncio.get_running_loop(), None)
        if reader is not None:
            await reader[1].aclose()
        if self._owns_client:
            self._client.close()

    async def _act(self, fn: Callable[..., _T], *args: Any) -> _T:
        def locked() -> _T:
            with self._actions:
                return fn(*args)

        return await run_in_threadpool(locked)

    # ------------------------------------------------------------------ reads

    async def queue_names(self) -> list[str]:
        return await self._monitor.scan_queues()

    async def stats(self, queue: str) -> QueueStats:
        return await self._monitor.stats(queue)

    async def activity(
        self, queues: list[str], marks: dict[str, tuple[int, int]]
    ) -> list[QueueActivity]:
        return await self._monitor.activity(queues, marks)

    async def lane_sizes(self, queue: str) -> dict[str, int]:
        return await self._monitor.lane_sizes(queue)

    async def lane_page(
        self, queue: str, lane: Lane, offset: int, limit: int, newest_first: bool
    ) -> list[LaneJob]:
        return await self._monitor.lane_page(queue, lane, offset, limit, newest_first)

    async def find_jobs(self, queue: str, lane: Lane, job_ids: list[str]) -> list[LaneJob]:
        return await self._monitor.find_jobs(queue, lane, job_ids)

    async def ready_groups(self, queue: str, offset: int, limit: int) -> list[GroupReady]:
        return await self._monitor.groups_ready_with_scores(queue, offset, limit)

    async def groups_page(self, queue: str, cursor: str, limit: int) -> GroupsPage:
        return await self._monitor.groups_page(queue, cursor, limit)

    async def group_status(self, queue: str, gids: list[str]) -> list[GroupStatus]:
        return await self._monitor.group_status(queue, gids)

    async def group_wait_page(
        self, queue: str, gid: str, offset: int, limit: int
    ) -> list[LaneJob]:
        return await self._monitor.group_wait_page(queue, gid, offset, limit)

    async def job(self, queue: str, job_id: str) -> Optional[JobInfo]:
        return await self._monitor.get_job(queue, job_id)

    async def counter(self, key: str) -> CounterStatus:
        return await self._monitor.counter(key)

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
        monitor = self._monitor
        retried = 0
        while retried < RETRY_ALL_MAX:
            # Always the head of the index: retried ids leave it, so no offset is needed.
            ids = [j.job_id for j in await monitor.lane_page(queue, "failed", 0, 25)]
            ids += [j.job_id for j in await monitor.lane_page(queue, "failed", 25, 25)]
            if not ids:
                break
            results = await self._act(self._client.retry_failed_batch, queue, ids[:_BATCH])
            done = sum(1 for item in results if item.status == "OK")
            retried += done
            if not done:  # every id refused (not failed any more): nothing left to do
                break
        return retried, (await monitor.lane_sizes(queue))["failed"]

