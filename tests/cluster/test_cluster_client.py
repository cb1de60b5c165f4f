"""The client on a Redis Cluster: detection, routing, multi-queue publish and consume,
counters, the sharded wake channel, the monitor, and following a slot that moved.

Where a key lives is checked on the nodes themselves (plain per-node connections), not
through a cluster client that would follow redirections and hide a wrong route.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from conftest import name_on
from omniq_fast import Client, Consumer, InvalidArgument, JobCtx
from omniq_fast._cluster import SlotRoute

POLL = {"poll_interval_s": 0.01, "promote_interval_s": 0.05, "reap_interval_s": 0.05}


@pytest.fixture
def client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    """Our client on either shell (AsyncClient behind blocking calls: ``async``)."""
    with shell(redis_url, _core=core) as c:
        yield c


@pytest.fixture
def sync_client(redis_url: str, core: ModuleType) -> Iterator[Client]:
    """The blocking client, for tests that reach into its own routing (the asyncio
    shell's counterparts are in test_async_cluster.py)."""
    with Client(redis_url, _core=core) as c:
        yield c


@pytest.fixture
def spread(cluster: Any, qname: str, r: RedisCluster) -> Iterator[list[str]]:
    """Six queue names, two on each master (names start with ``qname``)."""
    names = [name_on(cluster, m, qname) for m in cluster.masters() for _ in range(2)]
    yield names
    from support import delete_prefixed

    for name in names:
        delete_prefixed(r, "{" + name)


@contextmanager
def idle_consumer(url: str, queue: str, handled: threading.Event) -> Iterator[Consumer]:
    """A consumer of ``queue`` on its own client that polls only every 30 s, so a job it
    takes sooner came through the wake channel; ``handled`` is set by each job."""
    with Client(url) as own:
        consumer = Consumer(own, queue, lambda ctx: handled.set(), poll_interval_s=30.0,
                            promote_interval_s=60.0, reap_interval_s=60.0, verbose=False)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        try:
            yield consumer
        finally:
            consumer.stop()
            thread.join(10)


def node_keys(node: Any, pattern: str) -> set[bytes]:
    conn = redis.Redis(host=node.host, port=node.port)
    try:
        return set(conn.scan_iter(match=pattern, count=1000))
    finally:
        conn.close()


def owner_of(cluster: Any, key: str) -> Any:
    return cluster.owner_of_slot(cluster.slot_of(key))


# --------------------------------------------------------------------------- connecting


def test_cluster_is_detected_and_can_be_forced(redis_url: str, r: RedisCluster) -> None:
    with Client(redis_url) as c:
        assert c.is_cluster
        assert isinstance(c.redis, RedisCluster)
    with Client(redis_url, cluster=True) as c:
        assert c.is_cluster
    with Client(redis_url, cluster=False) as c:
        assert not c.is_cluster
    with Client(redis=r) as c:
        assert c.is_cluster


def test_cluster_rejects_a_database_number(redis_url: str) -> None:
    with Client(redis_url + "/3") as c, pytest.raises(InvalidArgument, match="database 0"):
        c.publish("q", {})
    with pytest.raises(InvalidArgument):
        Client(redis_url, cluster_retry_s=-1)


# --------------------------------------------------------------------------- routing


def test_each_queue_lives_on_the_master_owning_its_slot(
    client: Client, cluster: Any, spread: list[str]
) -> None:
    done = {}
    for queue in spread:
        job_id = client.publish(queue, {"q": queue})
        job = client.reserve(queue)
        assert job.job_id == job_id  # type: ignore[union-attr]
        client.ack_success(queue, job_id, job.lease_token)  # type: ignore[union-attr]
        done[queue] = job_id
    owners = {queue: owner_of(cluster, "{" + queue + "}") for queue in spread}
    assert len({o.node_id for o in owners.values()}) == 3
    for queue, owner in owners.items():
        for node in cluster.masters():
            keys = node_keys(node, "{" + queue + "}*")
            if node.node_id == owner.node_id:
                assert f"{{{queue}}}:job:{done[queue]}".encode() in keys
                assert f"{{{queue}}}:stats".encode() in keys
            else:
                assert not keys, f"{queue} has keys on a master that does not own it"


def test_publish_many_queues_spreads_over_the_masters(
    client: Client, cluster: Any, spread: list[str], r: RedisCluster
) -> None:
    jobs = {queue: [{"i": i} for i in range(700)] for queue in spread}
    ids = client.publish_many_queues(jobs, batch_size=200)
    assert {q: len(v) for q, v in ids.items()} == {q: 700 for q in spread}
    for queue in spread:
        assert r.llen(f"{{{queue}}}:wait") == 700
        assert r.hget(f"{{{queue}}}:job:{ids[queue][0]}", "payload") == b'{"i":0}'
        assert r.hget(f"{{{queue}}}:job:{ids[queue][-1]}", "payload") == b'{"i":699}'
    # publish_many is the one-queue case of the same stream
    more = client.publish_many(spread[0], [{"x": 1}] * 3)
    assert r.lrange(f"{{{spread[0]}}}:wait", -3, -1) == [i.encode() for i in more]


def test_consume_several_queues_on_several_masters(
    client: Client, spread: list[str], r: RedisCluster
) -> None:
    client.publish_many_queues({q: [{"q": q, "i": i} for i in range(40)] for q in spread})
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def count(ctx: JobCtx) -> None:
        assert ctx.payload["q"] == ctx.queue
        with lock:
            seen[ctx.queue] = seen.get(ctx.queue, 0) + 1

    async def count_async(ctx: JobCtx) -> None:
        count(ctx)

    handler: Any = count if isinstance(client, Client) else count_async  # AsyncConsumer
    stats = client.consume(spread, handler, max_jobs=40, concurrency=2, verbose=False, **POLL)
    assert stats.succeeded == 40 * len(spread)
    assert seen == {q: 40 for q in spread}
    for queue in spread:
        assert r.llen(f"{{{queue}}}:wait") == 0
        assert r.hget(f"{{{queue}}}:stats", "completed_kept") == b"40"


def test_consume_refuses_bad_queue_lists(client: Client) -> None:
    for queues in ([], ["a", "a"], ["ok", "bad name"]):
        with pytest.raises(ValueError):
            client.consume(queues, lambda ctx: None)


def test_counters_route_by_their_own_tag(client: Client, cluster: Any, qname: str) -> None:
    key = "cc-" + qname
    client.childs_init(key, 2)
    owner = owner_of(cluster, "{cc:" + key + "}")
    assert node_keys(owner, "{cc:" + key + "}*")
    assert client.child_ack(key, "a") == 1
    assert client.child_ack(key, "a") == 1  # a repeated child does not count twice
    assert client.child_ack(key, "b") == 0


def test_wake_goes_out_on_the_queues_shard(client: Client, cluster: Any, qname: str) -> None:
    """Producers SPUBLISH {Q}:wake on the queue's master; a sharded subscriber there
    hears every publish."""
    owner = owner_of(cluster, "{" + qname + "}")
    conn = redis.Redis(host=owner.host, port=owner.port)
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.ssubscribe(f"{{{qname}}}:wake")
    try:
        client.publish(qname, {"a": 1})
        client.publish_many(qname, [{"b": 2}] * 3)
        messages = []
        deadline = time.monotonic() + 5
        while len(messages) < 2 and time.monotonic() < deadline:
            message = pubsub.get_sharded_message(timeout=0.2)
            if message is not None:
                messages.append(message)
        assert [m["type"] for m in messages] == ["smessage", "smessage"]
        assert {m["channel"] for m in messages} == {f"{{{qname}}}:wake".encode()}
    finally:
        pubsub.close()
        conn.close()


def test_idle_consumer_is_woken_through_the_shard(
    client: Client, redis_url: str, qname: str
) -> None:
    """With a 30 s poll, only the wake message can hand the job over before the test's
    own 10 s limit."""
    got = threading.Event()
    with idle_consumer(redis_url, qname, got):
        time.sleep(0.3)  # let it go idle on the wake channel
        client.publish(qname, {"wake": True})
        assert got.wait(10), "the consumer was not woken"


def test_monitor_reads_queues_on_every_master(
    sync_client: Client, spread: list[str], monitor_of: Any
) -> None:
    for queue in spread:
        sync_client.publish(queue, {"a": 1})
    monitor = monitor_of(sync_client)
    assert set(spread) <= set(monitor.scan_queues())
    stats = monitor.stats_many(spread)
    assert [s.waiting for s in stats] == [1] * len(spread)
    job = monitor.lane_page(spread[-1], "wait")
    assert len(job) == 1


# --------------------------------------------------------------------------- moving slots


def test_a_moved_queue_is_followed(client: Client, cluster: Any, qname: str) -> None:
    """The client learns of the move only from MOVED replies: its map is stale."""
    first = client.publish(qname, {"n": 1})
    assert client.is_paused(qname) is False
    slot = cluster.slot_of("{" + qname + "}")
    source = cluster.owner_of_slot(slot)
    target = next(m for m in cluster.masters() if m.node_id != source.node_id)
    assert cluster.migrate_slot(slot, target) > 0
    if isinstance(client, Client):
        assert isinstance(client._engine.at("{" + qname + "}:meta"), SlotRoute)
    second = client.publish(qname, {"n": 2})
    jobs = client.reserve_many(qname, 10)
    assert [j.job_id for j in jobs] == [first, second]  # type: ignore[union-attr]
    assert client.ack_success_many(qname, jobs)[0].status == "OK"  # type: ignore[arg-type]
    assert client.is_paused(qname) is False
    assert node_keys(target, "{" + qname + "}*")
    assert not node_keys(source, "{" + qname + "}*")
    more = client.publish_many_queues({qname: [{"n": i} for i in range(50)]})
    assert len(more[qname]) == 50


def test_after_a_lost_connection_only_harmless_scripts_are_sent_again(
    sync_client: Client, qname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first call of each kind runs on the server, then its connection "breaks"."""
    from omniq_fast import ConnectionLost

    client = sync_client
    job_id = client.publish(qname, {"a": 1})
    job = client.reserve(qname)
    route = client._engine.at("{" + qname + "}:meta")
    assert isinstance(route, SlotRoute)
    transport = route.owner_transport()
    real = transport.run_many
    sent: list[str] = []

    def breaks_after_running(calls: Any, extra: Any = ()) -> Any:
        sent.extend(s.name for s, _ in calls)
        replies = real(calls, extra)
        if len(sent) == 1:
            raise ConnectionLost("simulated: the reply was lost")
        return replies

    monkeypatch.setattr(transport, "run_many", breaks_after_running)
    lock = client.heartbeat(qname, job_id, job.lease_token)  # type: ignore[union-attr]
    assert sent == ["heartbeat", "heartbeat"] and lock > 0
    sent.clear()
    with pytest.raises(ConnectionLost):
        client.ack_success(qname, job_id, job.lease_token)  # type: ignore[union-attr]
    assert sent == ["ack_success"]  # not re-sent: a second run would answer NOT_ACTIVE
    monkeypatch.undo()
    assert client.redis.hget(f"{{{qname}}}:job:{job_id}", "state") == b"completed"


def test_wake_listener_follows_its_queue_to_another_master(
    client: Client, redis_url: str, cluster: Any, qname: str
) -> None:
    """The server ends a sharded subscription when its slot moves; the listener then
    subscribes at the new owner, so an idle consumer (30 s poll) is still woken."""
    woken = threading.Event()
    client.publish(qname, {"first": True})  # creates the queue's keys, so the slot has some
    with idle_consumer(redis_url, qname, woken):
        assert woken.wait(10)
        woken.clear()
        slot = cluster.slot_of("{" + qname + "}")
        source = cluster.owner_of_slot(slot)
        target = next(m for m in cluster.masters() if m.node_id != source.node_id)
        assert cluster.migrate_slot(slot, target) > 0
        time.sleep(0.5)  # the listener resubscribes at the new owner
        client.publish(qname, {"after the move": True})
        assert woken.wait(10), "the consumer was not woken after its queue moved"
