"""AsyncClient against a real server: every method, the keyspace the blocking client leaves,
automatic pipelining, replies reaching their own callers, typed setup errors."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aredis

from omniq_fast import (
    AsyncClient,
    Client,
    DuplicateJob,
    InvalidArgument,
    InvalidQueueName,
    Job,
    Paused,
    ReservedJob,
    ServerUnreachable,
    TokenMismatch,
)
from shells import BlockingAsync
from support import snapshot

NOW = 1_700_000_000_000
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the same keyspace


def _outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return ("raised", type(exc).__name__, str(exc))


def every_method(c: Any, q: str) -> list[Any]:
    """One pass over every method (errors included) with fixed ids and clocks."""
    out: list[Any] = []

    def rec(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        value = _outcome(fn, *args, **kwargs)
        out.append(value)
        return value

    f, cc = q + "f", "cc:" + q
    rec(c.publish, q, {"a": 1}, job_id="j1", timeout_ms=7000, now_ms_override=NOW)
    rec(c.publish_json, q, [1, "é"], job_id="j2", gid="g", group_limit=2, now_ms_override=NOW)
    rec(c.publish, q, {"a": 2}, job_id="j1", now_ms_override=NOW)  # DuplicateJob
    rec(c.publish, q, {"d": 1}, job_id="j3", due_ms=NOW + 1000, now_ms_override=NOW)
    rec(c.publish, "bad name!", {})  # InvalidQueueName, nothing sent
    rec(c.publish, q, "not structured")  # InvalidPayload
    jobs = [Job({"i": i}, job_id=f"m{i}", gid="h" if i % 2 else None) for i in range(7)]
    rec(c.publish_many, q, jobs, now_ms_override=NOW, batch_size=3)
    rec(c.publish_many, q, [Job({"i": 0}, job_id="m0")], now_ms_override=NOW)  # DuplicateJobs
    rec(c.publish_many_queues, {q + "b": [Job({"b": 1}, job_id="b1")], f: [Job(
        {"f": 1}, job_id="f1", max_attempts=1)]}, now_ms_override=NOW)  # fmt: skip
    first = rec(c.reserve, q, now_ms_override=NOW + 1)
    assert isinstance(first, ReservedJob)
    rec(c.heartbeat, q, first.job_id, first.lease_token, now_ms_override=NOW + 2)
    rec(c.heartbeat, q, first.job_id, "not-the-token", now_ms_override=NOW + 2)
    rec(c.ack_success, q, first.job_id, first.lease_token, now_ms_override=NOW + 3)
    rec(c.ack_success, q, first.job_id, first.lease_token, now_ms_override=NOW + 3)
    second = rec(c.reserve, q, now_ms_override=NOW + 4)
    rec(c.ack_fail, q, second.job_id, second.lease_token, error="boom", now_ms_override=NOW + 5)
    rec(c.promote_delayed, q, now_ms_override=NOW + 5000)
    rec(c.promote_delayed, q, max_promote=0)  # InvalidArgument
    many = rec(c.reserve_many, q, 4, now_ms_override=NOW + 6)
    rec(c.heartbeat_many, q, many[:2], now_ms_override=NOW + 7)
    rec(c.ack_success_many, q, many[:1], now_ms_override=NOW + 8)
    rec(c.ack_fail_many, q, many[1:2], ["e"], now_ms_override=NOW + 8)
    rec(c.ack_fail_many, q, many[1:2], ["e", "f"])  # InvalidArgument
    rec(c.release_many, q, many[2:], now_ms_override=NOW + 9)
    rec(c.reserve, q, now_ms_override=NOW + 10)
    rec(c.reap_expired, q, now_ms_override=NOW + 10_000_000)
    rec(c.reap_expired, q, max_reap=0)
    rec(c.job_timeout_ms, q, "j1")
    rec(c.job_timeout_ms, q, "nope")
    rec(c.pause, q)
    rec(c.is_paused, q)
    rec(c.reserve, q, now_ms_override=NOW + 11)
    rec(c.reserve_many, q, 2, now_ms_override=NOW + 11)
    rec(c.resume, q)
    rec(c.resume, q)
    rec(c.is_paused, q)
    lease = rec(c.reserve, f, now_ms_override=NOW + 12)
    rec(c.ack_fail, f, lease.job_id, lease.lease_token, now_ms_override=NOW + 13)
    rec(c.retry_failed, f, "f1", now_ms_override=NOW + 14)
    rec(c.retry_failed, f, "f1", now_ms_override=NOW + 14)  # AdminError NOT_FAILED
    rec(c.retry_failed_batch, f, ["f1", "nope"], now_ms_override=NOW + 15)
    rec(c.retry_failed_batch, f, [], now_ms_override=NOW + 15)
    rec(c.retry_failed_batch, f, "f1")  # InvalidArgument
    rec(c.remove_job, f, "f1", "wait")
    rec(c.remove_job, f, "f1", "wait")  # AdminError NO_JOB
    rec(c.remove_job, f, "f1", "nowhere")  # InvalidArgument
    rec(c.remove_jobs_batch, q, "wait", ["m4", "m6", "nope"])
    rec(c.remove_jobs_batch, q, "wait", [])
    rec(c.childs_init, cc, 2)
    rec(c.childs_init, cc, 2)  # AdminError ALREADY_INIT
    rec(c.child_ack, cc, "a")
    rec(c.child_ack, cc, "a")
    rec(c.child_ack, cc, "b")
    rec(c.child_ack, "cc:" + q + "none", "a")
    rec(c.queue_base, q)
    return out


def _same_second(snap: dict[bytes, Any]) -> dict[bytes, Any]:
    # remove_job stamps the queue's stats with the server's clock, not ours.
    for key, (kind, value, ttl) in snap.items():
        if kind == "hash" and b"last_activity_ms" in value:
            value[b"last_activity_ms"] = "server clock"
    return snap


def test_every_method_leaves_the_keyspace_the_blocking_client_leaves(
    redis_url: str, oracle_url: str, qname: str, r: redis.Redis, r2: redis.Redis, core: Any
) -> None:
    # Same queue names on two databases: the blocking client on one, ours on the other
    # (each core twin in turn under the asyncio shell).
    with Client(redis_url) as sync:
        theirs = every_method(sync, qname)
    with BlockingAsync(oracle_url, _core=core) as ours:
        mine = every_method(ours, qname)
    assert mine == theirs
    assert any(isinstance(v, tuple) and v[1] == "DuplicateJob" for v in mine)
    prefixes = ("{" + qname, "{cc:" + qname)
    assert _same_second(snapshot(r2, *prefixes)) == _same_second(snapshot(r, *prefixes))
    assert snapshot(r, *prefixes)  # the pass wrote something


# --------------------------------------------------------------------------- pipelining


class _CountingWrites:
    """Wraps a stream writer's ``write`` to count the writes the connection makes."""

    def __init__(self, client: AsyncClient) -> None:
        link = client._engine.connection._link
        assert link is not None
        self.writes = 0
        self.bytes = 0
        plain = link.writer.write

        def write(data: Any) -> None:
            self.writes += 1
            self.bytes += len(data)
            plain(data)

        link.writer.write = write  # type: ignore[method-assign]


def _script_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def test_concurrent_publishes_share_few_writes(redis_url: str, qname: str, r: redis.Redis) -> None:
    async def main() -> tuple[list[str], _CountingWrites, int]:
        async with AsyncClient(redis_url) as c:
            await c.is_paused(qname)  # connected (and the mode checked)
            counter = _CountingWrites(c)
            before = _script_calls(r)
            ids = await asyncio.gather(*(c.publish(qname, {"i": i}) for i in range(1000)))
            return ids, counter, _script_calls(r) - before

    ids, counter, scripts = run(main())
    assert len(set(ids)) == 1000
    assert r.lrange("{" + qname + "}:wait", 0, -1) == [i.encode() for i in ids]  # call order
    # The loop turn's publishes went as one enqueue_batch call (1000 jobs fit one), in one
    # write or a few; the server ran one script, not 1000 (other tests may add a few).
    assert 1 <= counter.writes <= 5, counter.writes
    assert counter.bytes > 1000 * 30  # every job's id and payload went out
    assert 1 <= scripts < 100, scripts


def test_concurrent_publishes_each_get_their_own_outcome(
    redis_url: str, qname: str, r: redis.Redis
) -> None:
    """A batch of single publishes: a duplicate id fails only its caller, a bad argument
    fails at once in its caller and joins no batch, the others are queued."""
    from omniq_fast.errors import DuplicateJob, InvalidArgument

    async def main() -> list[Any]:
        async with AsyncClient(redis_url) as c:
            await c.publish(qname, {"first": True}, job_id="taken")
            calls = [c.publish(qname, {"i": i}, job_id=f"j{i}") for i in range(5)]
            calls.insert(2, c.publish(qname, {"again": True}, job_id="taken"))
            calls.insert(4, c.publish(qname, {"bad": True}, max_attempts=0))
            return await asyncio.gather(*calls, return_exceptions=True)

    out = run(main())
    assert out[:2] == ["j0", "j1"] and out[3] == "j2" and out[5:] == ["j3", "j4"]
    assert isinstance(out[2], DuplicateJob) and out[2].job_id == "taken"
    assert isinstance(out[4], InvalidArgument)
    assert r.lrange("{" + qname + "}:wait", 0, -1) == [b"taken", b"j0", b"j1", b"j2", b"j3", b"j4"]


def test_replies_reach_their_own_callers(redis_url: str, qname: str, r: redis.Redis) -> None:
    with Client(redis_url) as sync:
        ids = [sync.publish(qname, {"i": i}, timeout_ms=1000 + i) for i in range(300)]

    async def main() -> list[Any]:
        async with AsyncClient(redis_url) as c:
            calls: list[Awaitable[Any]] = []
            for i, job_id in enumerate(ids):
                calls.append(c.job_timeout_ms(qname, job_id))
                calls.append(c.is_paused(qname) if i % 2 else c.promote_delayed(qname))
            return await asyncio.gather(*calls)

    results = run(main())
    assert results[0::2] == [1000 + i for i in range(300)]
    assert all(v is False or v == 0 for v in results[1::2])


def test_a_cancelled_caller_does_not_shift_the_replies(redis_url: str, qname: str) -> None:
    with Client(redis_url) as sync:
        ids = [sync.publish(qname, {"i": i}, timeout_ms=2000 + i) for i in range(50)]

    async def main() -> list[Any]:
        async with AsyncClient(redis_url) as c:
            await c.is_paused(qname)
            tasks = [asyncio.ensure_future(c.job_timeout_ms(qname, i)) for i in ids]
            await asyncio.sleep(0)  # every task has queued its call
            for task in tasks[::3]:
                task.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            after = await c.job_timeout_ms(qname, ids[7])
            return [*done, after]

    results = run(main())
    for i, value in enumerate(results[:-1]):
        if i % 3 == 0:
            assert isinstance(value, asyncio.CancelledError)
        else:
            assert value == 2000 + i
    assert results[-1] == 2007


def test_errors_are_typed_and_checked_before_sending(redis_url: str, qname: str) -> None:
    async def main() -> None:
        async with AsyncClient(redis_url) as c:
            await c.publish(qname, {"a": 1}, job_id="x")
            counter = _CountingWrites(c)
            with pytest.raises(InvalidQueueName):
                await c.publish("no spaces", {"a": 1})
            with pytest.raises(InvalidArgument):
                await c.reserve_many(qname, 1001)
            with pytest.raises(InvalidArgument):
                await c.publish_many(qname, [{"a": 1}], batch_size=0)
            assert counter.writes == 0  # nothing was sent for bad arguments
            with pytest.raises(DuplicateJob):
                await c.publish(qname, {"a": 2}, job_id="x")
            job = await c.reserve(qname)
            assert isinstance(job, ReservedJob)
            with pytest.raises(TokenMismatch):
                await c.ack_success(qname, job.job_id, job.lease_token + "x")
            await c.pause(qname)
            assert isinstance(await c.reserve(qname), Paused)

    run(main())


def test_scripts_flushed_meanwhile_are_loaded_again(redis_url: str, qname: str) -> None:
    async def main() -> tuple[list[str], list[str]]:
        async with AsyncClient(redis_url) as c:
            await c.publish(qname, {"warm": 1})
            await c.redis.script_flush()
            single = await asyncio.gather(*(c.publish(qname, {"i": i}) for i in range(20)))
            await c.redis.script_flush()
            many = await c.publish_many(qname, [{"j": j} for j in range(1500)], batch_size=200)
            return single, many

    single, many = run(main())
    assert len(single) == 20 and len(many) == 1500
    with Client(redis_url) as sync:
        assert sync.redis.llen("{" + qname + "}:wait") == 1521


def test_a_given_redis_client_is_left_open(redis_url: str, qname: str) -> None:
    async def main() -> None:
        given = aredis.Redis.from_url(redis_url)
        async with AsyncClient(redis=given) as c:
            await c.publish(qname, {"a": 1})
            assert c.redis is given
        assert await given.llen("{" + qname + "}:wait") == 1  # still usable
        await given.aclose()

    run(main())


def _other_port(url: str) -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, "", ""))


def test_setup_failures_are_typed(redis_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(_other_port(redis_url), socket_connect_timeout=1) as c:
            with pytest.raises(ServerUnreachable):
                await c.publish("q", {"a": 1})
        parts = urlsplit(redis_url)
        bad_db = urlunsplit((parts.scheme, parts.netloc, "/999", "", ""))
        async with AsyncClient(bad_db) as c:
            with pytest.raises(InvalidArgument):
                await c.is_paused("q")
        with pytest.raises(InvalidArgument):
            AsyncClient(redis_url, redis=aredis.Redis())

    run(main())


def test_cluster_mode_is_not_forced_on_a_standalone_server_by_default(
    redis_url: str, qname: str
) -> None:
    # Detection on first use: a standalone server stays standalone (the cluster side is
    # tested against real clusters in tests/cluster/test_async_cluster.py).
    async def main() -> None:
        async with AsyncClient(redis_url) as c:
            assert not c.is_cluster
            await c.publish(qname, {"a": 1})
            assert not c.is_cluster
        with pytest.raises(InvalidArgument):
            AsyncClient(redis=aredis.RedisCluster(host="127.0.0.1"), cluster=False)

    run(main())


def test_one_client_per_loop_reconnects_after_close(redis_url: str, qname: str) -> None:
    async def main() -> list[str]:
        c = AsyncClient(redis_url)
        first = await c.publish(qname, {"a": 1})
        await c.close()
        async with AsyncClient(redis_url) as again:
            return [first, await again.publish(qname, {"a": 2})]

    assert len(set(run(main()))) == 2


def test_an_idle_connection_the_server_closed_is_replaced(
    redis_url: str, qname: str, r: redis.Redis
) -> None:
    name = "aio-" + qname

    async def main() -> str:
        async with AsyncClient(redis_url, client_name=name) as c:
            await c.publish(qname, {"a": 1}, job_id="before")
            (ours,) = [x for x in r.client_list() if x["name"] == name]
            r.client_kill_filter(_id=ours["id"])
            link = c._engine.connection._link
            assert link is not None
            await asyncio.wait_for(_eof(link.reader), 5)
            # Not sent on the dead socket (it would be reported lost): on a fresh one.
            return await c.publish(qname, {"a": 2}, job_id="after")

    assert run(main()) == "after"
    assert r.llen("{" + qname + "}:wait") == 2


async def _eof(reader: asyncio.StreamReader) -> None:
    while not reader.at_eof():
        await asyncio.sleep(0.01)
