"""AsyncClient on a Redis Cluster: what the asyncio shell does on its own (the shared
behaviour runs on both shells in the other modules of tests/cluster through ``shell``).

Detection and the ``redis=`` forms; auto-pipelining per node (the calls of one loop turn
go out in one write per master, a burst of publishes as one ``enqueue_batch`` per queue);
publishes going on while their queue's slot migrates; the wake channel at the queue's
shard for an idle async consumer, also after its queue moved; the monitor on every master;
and the did-it-run rule after a lost connection.

Where keys live is read on the nodes themselves (plain per-node connections).
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any, Awaitable, Iterator, TypeVar

import pytest
import redis.asyncio as aredis
from redis.cluster import RedisCluster

from conftest import name_on
from omniq_fast import AsyncClient, AsyncQueueMonitor, ConnectionLost, InvalidArgument, JobCtx
from omniq_fast.aio import _connection
from support import delete_prefixed
from test_resharding import Resharder, node_client

T = TypeVar("T")
IDLE = {"poll_interval_s": 30.0, "promote_interval_s": 60.0, "reap_interval_s": 60.0,
        "verbose": False, "stop_on_ctrl_c": False}  # fmt: skip


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


@pytest.fixture
def spread(cluster: Any, qname: str, r: RedisCluster) -> Iterator[list[str]]:
    """Six queue names, two on each master."""
    names = [name_on(cluster, m, qname) for m in cluster.masters() for _ in range(2)]
    yield names
    for name in names:
        delete_prefixed(r, "{" + name)


@pytest.fixture
def resharder(cluster: Any) -> Iterator[Resharder]:
    moves = Resharder(cluster)
    yield moves
    moves.undo()


def owner_of(cluster: Any, queue: str) -> Any:
    return cluster.owner_of_slot(cluster.slot_of("{" + queue + "}"))


def evalsha_calls(node: Any) -> int:
    conn = node_client(node)
    try:
        stats = conn.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0))
    finally:
        conn.close()


class Writes:
    """Counts the socket writes of every pipelined connection, by the node it talks to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by_node: dict[str, int] = {}
        real = _connection._Link.flush

        def counting(link: Any) -> None:
            if link.buffer and not link.dead:
                kw = link.owner.redis.connection_pool.connection_kwargs
                node = f"{kw['host']}:{kw['port']}"
                self.by_node[node] = self.by_node.get(node, 0) + 1
            real(link)

        monkeypatch.setattr(_connection._Link, "flush", counting)

    def reset(self) -> None:
        self.by_node.clear()


# --------------------------------------------------------------------------- connecting


def test_cluster_is_detected_and_can_be_forced(redis_url: str, qname: str) -> None:
    async def main() -> None:
        async with AsyncClient(redis_url) as c:
            assert not c.is_cluster  # not known before the first call
            await c.publish(qname, {"a": 1})
            assert c.is_cluster
            assert isinstance(c.redis, aredis.RedisCluster)
        async with AsyncClient(redis_url, cluster=True) as c:
            assert c.is_cluster
            assert await c.is_paused(qname) is False
        given = aredis.RedisCluster.from_url(redis_url)
        async with AsyncClient(redis=given) as c:
            assert c.is_cluster and c.redis is given
            assert (await c.reserve(qname)).payload == '{"a":1}'  # type: ignore[union-attr]
        assert await given.ping()  # a client it was given is not closed
        await given.aclose()
        with pytest.raises(InvalidArgument):
            AsyncClient(redis=aredis.RedisCluster.from_url(redis_url), cluster=False)
        async with AsyncClient(redis_url + "/3") as c:
            with pytest.raises(InvalidArgument, match="database"):
                await c.publish(qname, {})

    run(main())


# --------------------------------------------------------------------------- pipelining


def test_a_burst_of_publishes_goes_out_as_one_batch_per_queue_and_one_write_per_node(
    redis_url: str, cluster: Any, spread: list[str], r: RedisCluster, core: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes = Writes(monkeypatch)
    per_queue = 100

    async def main() -> list[str]:
        async with AsyncClient(redis_url, _core=core) as c:
            for queue in spread:  # connect to every node and load the script first
                await c.publish(queue, {"warm": True})
            writes.reset()
            before = {m.node_id: evalsha_calls(m) for m in cluster.masters()}
            ids = await asyncio.gather(*(
                c.publish(queue, {"q": queue, "i": i})
                for i in range(per_queue) for queue in spread
            ))  # fmt: skip
            after = {m.node_id: evalsha_calls(m) for m in cluster.masters()}
            # Two queues per master: one enqueue_batch each, in one write per node.
            assert {n: after[n] - before[n] for n in after} == {n: 2 for n in after}
            assert len(writes.by_node) == 3 and max(writes.by_node.values()) <= 2, writes.by_node
            return list(ids)

    ids = run(main())
    assert len(set(ids)) == per_queue * len(spread)
    for queue in spread:
        assert r.llen(f"{{{queue}}}:wait") == per_queue + 1


def test_concurrent_calls_on_several_masters_share_one_write_per_node(
    redis_url: str, spread: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(monkeypatch)

    async def main() -> None:
        async with AsyncClient(redis_url) as c:
            for queue in spread:  # connect to every node, load the scripts there first
                await c.publish_many(queue, [{"i": i} for i in range(11)])
                await c.reserve(queue)
            writes.reset()
            paused = await asyncio.gather(*(c.is_paused(q) for q in spread for _ in range(20)))
            assert paused == [False] * 120
            assert len(writes.by_node) == 3 and max(writes.by_node.values()) <= 2, writes.by_node
            writes.reset()
            jobs = await asyncio.gather(*(c.reserve(q) for q in spread for _ in range(10)))
            assert len({j.job_id for j in jobs}) == 60  # type: ignore[union-attr]
            assert max(writes.by_node.values()) <= 2, writes.by_node

    run(main())


def test_publish_many_streams_on_every_master(
    redis_url: str, cluster: Any, spread: list[str], r: RedisCluster, core: ModuleType
) -> None:
    async def main() -> dict[str, list[str]]:
        async with AsyncClient(redis_url, _core=core) as c:
            return await c.publish_many_queues(
                {q: [{"q": q, "i": i} for i in range(450)] for q in spread}, batch_size=100
            )

    ids = run(main())
    assert {q: len(v) for q, v in ids.items()} == {q: 450 for q in spread}
    for queue in spread:
        owner = owner_of(cluster, queue)
        conn = node_client(owner)  # on the owner itself: no redirection hides a wrong node
        try:
            assert conn.lrange(f"{{{queue}}}:wait", 0, -1) == [i.encode() for i in ids[queue]]
        finally:
            conn.close()


# --------------------------------------------------------------------------- moving slots


def test_publishes_during_a_migration_follow_the_slot_and_all_land_once(
    redis_url: str, cluster: Any, qname: str, resharder: Resharder
) -> None:
    """Four tasks publish one job at a time while the queue's slot moves key by key: the
    scripts wait out the migration (ASK) and follow the MOVED; each job is there once."""
    src = owner_of(cluster, qname)
    dst = next(m for m in cluster.masters() if m.node_id != src.node_id)
    slot = cluster.slot_of("{" + qname + "}")
    published: list[str] = []

    async def main() -> None:
        async with AsyncClient(redis_url) as c:
            published.extend(await c.publish_many(qname, [{"i": i} for i in range(150)]))
            moving = asyncio.ensure_future(asyncio.to_thread(resharder.migrate, slot, dst))

            async def producer(n: int) -> None:
                i = 0
                while not moving.done() or i < 5:
                    published.append(await c.publish(qname, {"p": n, "i": i}))
                    i += 1

            await asyncio.gather(*(producer(n) for n in range(4)))
            assert await moving > 0
            assert c._engine.router is not None
            owner = c._engine.router.owner(slot)
            assert owner is not None
            kw = owner.redis.connection_pool.connection_kwargs
            assert (kw["host"], int(kw["port"])) == (dst.host, dst.port)
            job = await c.reserve(qname)
            assert job.job_id == published[0]  # type: ignore[union-attr]

    run(main())
    conn = node_client(dst)
    try:
        waiting = conn.lrange("{" + qname + "}:wait", 0, -1)
        active = conn.zrange("{" + qname + "}:active", 0, -1)
    finally:
        conn.close()
    assert len(published) == len(set(published)) > 150
    assert sorted(x.decode() for x in waiting + active) == sorted(published)


def test_an_idle_async_consumer_is_woken_through_the_shard_also_after_a_move(
    redis_url: str, cluster: Any, qname: str, resharder: Resharder
) -> None:
    """With a 30 s poll only the wake message (SPUBLISH at the queue's master, heard with
    SSUBSCRIBE there) hands a job over within the 10 s limit; after the slot moved the
    server ends the subscription and the listener subscribes at the new owner."""
    slot = cluster.slot_of("{" + qname + "}")
    dst = next(m for m in cluster.masters() if m.node_id != owner_of(cluster, qname).node_id)

    async def main() -> None:
        async with AsyncClient(redis_url) as c:
            await c.publish(qname, {"first": True})  # the slot has keys to move
            seen: asyncio.Queue[Any] = asyncio.Queue()

            async def handler(ctx: JobCtx) -> None:
                await seen.put(ctx.payload)

            consuming = asyncio.ensure_future(c.consume(qname, handler, max_jobs=3, **IDLE))
            assert await asyncio.wait_for(seen.get(), 10) == {"first": True}
            await asyncio.sleep(0.3)  # idle on the wake channel now
            await c.publish(qname, {"second": True})
            assert await asyncio.wait_for(seen.get(), 10) == {"second": True}
            assert await asyncio.to_thread(resharder.migrate, slot, dst) > 0
            await asyncio.sleep(0.5)  # the listener subscribes at the new owner
            await c.publish(qname, {"after the move": True})
            assert await asyncio.wait_for(seen.get(), 10) == {"after the move": True}
            stats = await asyncio.wait_for(consuming, 10)
            assert stats.succeeded == 3

    run(main())


def test_the_async_monitor_reads_queues_on_every_master(
    redis_url: str, spread: list[str]
) -> None:
    async def main() -> None:
        async with AsyncClient(redis_url) as c:
            for queue in spread:
                await c.publish(queue, {"a": 1})
            monitor = AsyncQueueMonitor(c)
            assert set(spread) <= set(await monitor.scan_queues())
            assert [s.waiting for s in await monitor.stats_many(spread)] == [1] * 6

    run(main())


# --------------------------------------------------------------------------- lost replies


def test_after_a_lost_connection_only_harmless_scripts_are_sent_again(
    redis_url: str, qname: str, r: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first call of each kind runs on the server, then its reply is "lost"."""

    async def main() -> str:
        async with AsyncClient(redis_url) as c:
            job_id = await c.publish(qname, {"a": 1})
            job = await c.reserve(qname)
            router = c._engine.router
            assert router is not None
            real = router.send
            sent: list[str] = []

            async def breaks_after_running(conn: Any, calls: Any, extra: Any) -> Any:
                sent.extend(s.name for s, _ in calls)
                replies = await real(conn, calls, extra)
                if len(sent) == 1:
                    raise ConnectionLost("simulated: the reply was lost")
                return replies

            monkeypatch.setattr(router, "send", breaks_after_running)
            lock = await c.heartbeat(qname, job_id, job.lease_token)  # type: ignore[union-attr]
            assert sent == ["heartbeat", "heartbeat"] and lock > 0
            sent.clear()
            with pytest.raises(ConnectionLost):
                await c.ack_success(qname, job_id, job.lease_token)  # type: ignore[union-attr]
            assert sent == ["ack_success"]  # not re-sent: a second run answers NOT_ACTIVE
            sent.clear()
            with pytest.raises(ConnectionLost):
                await c.publish(qname, {"b": 2}, job_id="once")
            assert sent == ["enqueue_batch"]  # a second run would queue it twice
            monkeypatch.undo()
            return job_id

    job_id = run(main())
    assert r.hget(f"{{{qname}}}:job:{job_id}", "state") == b"completed"
    assert r.lrange(f"{{{qname}}}:wait", 0, -1) == [b"once"]  # ran once, not re-sent
