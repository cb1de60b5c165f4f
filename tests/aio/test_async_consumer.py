"""AsyncConsumer against a real server: every job completed exactly once at concurrency 1
and 64, failures retried, a raising handler survived, stop() and cancellation giving
prefetched jobs back, the multi-queue consumer."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import ModuleType
from typing import Any, Iterator

import pytest
import redis

from omniq_fast import AsyncClient, Client, ConsumerStats, InvalidOptionType, JobCtx
from omniq_fast.aio.consumer import AsyncCheckCompletion, AsyncConsumer, AsyncExec, AsyncJobCtx
from omniq_fast.aio.multiqueue import AsyncMultiConsumer
from support import job_hash


@pytest.fixture
def client(redis_url: str, core: ModuleType) -> Iterator[Client]:
    with Client(redis_url, _core=core) as c:
        yield c


def consume(redis_url: str, core: ModuleType, queue: str, handler: Any, **options: Any) -> ConsumerStats:
    async def main() -> ConsumerStats:
        async with AsyncClient(redis_url, _core=core) as ac:
            return await AsyncConsumer(ac, queue, handler, **options).run()

    return asyncio.run(main())


def states(r: redis.Redis, queue: str, ids: list[str]) -> Counter[str]:
    """How many of ``ids`` are in each state; the server keeps the last 100 completed
    jobs, so a job without its hash counts as completed."""
    return Counter(job_hash(r, queue, i).get("state", "completed") for i in ids)


@pytest.mark.parametrize("concurrency", [1, 64])
def test_every_job_completed_exactly_once(
    client: Client, r: redis.Redis, redis_url: str, core: ModuleType, qname: str, concurrency: int
) -> None:
    n = 300
    ids = client.publish_many(qname, [{"i": i} for i in range(n)])
    seen: list[str] = []
    running = 0
    most = 0

    async def handler(ctx: JobCtx) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        seen.append(ctx.job_id)
        running -= 1

    stats = consume(redis_url, core, qname, handler, concurrency=concurrency, burst=True)
    assert stats.succeeded == n and stats.handled == n and stats.failed == 0
    assert Counter(seen) == Counter(ids)  # each job ran once
    assert 1 <= most <= concurrency
    if concurrency > 1:
        assert most > 1  # the handlers really overlapped
    assert states(r, qname, ids) == Counter({"completed": n})


def test_failures_are_retried(
    client: Client, r: redis.Redis, redis_url: str, core: ModuleType, qname: str
) -> None:
    n = 40
    ids = client.publish_many(qname, [{"i": i} for i in range(n)], max_attempts=2, backoff_ms=0)
    attempts: Counter[str] = Counter()

    async def handler(ctx: JobCtx) -> None:
        attempts[ctx.job_id] += 1
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")

    stats = consume(redis_url, core, qname, handler, concurrency=8, max_jobs=2 * n,
                    promote_interval_s=0.02, poll_interval_s=0.01)  # fmt: skip
    assert stats.failed == n and stats.succeeded == n
    assert all(attempts[i] == 2 for i in ids)
    assert states(r, qname, ids) == Counter({"completed": n})
    assert "RuntimeError: first try fails" in r.hget(f"{{{qname}}}:job:{ids[0]}", "last_error").decode()


def test_a_raising_handler_does_not_stop_it(
    client: Client, r: redis.Redis, redis_url: str, core: ModuleType, qname: str
) -> None:
    bad = client.publish(qname, {"bad": True}, max_attempts=1)
    good = client.publish_many(qname, [{"i": i} for i in range(20)])

    async def handler(ctx: JobCtx) -> None:
        if ctx.payload.get("bad"):
            raise ValueError("boom")

    stats = consume(redis_url, core, qname, handler, burst=True)
    assert stats.failed == 1 and stats.succeeded == 20
    assert job_hash(r, qname, bad)["state"] == "failed"
    assert states(r, qname, good) == Counter({"completed": 20})


def test_exec_helpers_are_coroutines(
    client: Client, redis_url: str, core: ModuleType, qname: str
) -> None:
    client.publish(qname, {"x": 1})
    seen: list[Any] = []

    async def handler(ctx: AsyncJobCtx) -> None:
        seen.append(type(ctx.exec))
        seen.append(type(ctx.check_completion))
        seen.append(await ctx.exec.publish(queue=qname + "child", payload={"y": 2}))
        await ctx.check_completion.init_job_counter("cc:" + qname, 1)
        seen.append(await ctx.check_completion.job_decrement("cc:" + qname))

    stats = consume(redis_url, core, qname, handler, burst=True)
    assert stats.succeeded == 1
    assert seen[:2] == [AsyncExec, AsyncCheckCompletion]
    assert isinstance(seen[2], str) and seen[3] == 0


def _slow_consumer_run(
    redis_url: str, core: ModuleType, qname: str, end: str
) -> tuple[list[str], ConsumerStats, bool]:
    """Consume with deep prefetch, then stop (``end="stop"``) or cancel the task."""
    ran: list[str] = []
    cancelled = False

    async def main() -> ConsumerStats:
        nonlocal cancelled
        async with AsyncClient(redis_url, _core=core) as ac:

            async def handler(ctx: JobCtx) -> None:
                await asyncio.sleep(0.001)
                ran.append(ctx.job_id)

            consumer = AsyncConsumer(ac, qname, handler, concurrency=4, prefetch=1000)
            task = asyncio.ensure_future(consumer.run())
            while len(ran) < 50:
                await asyncio.sleep(0.005)
            if end == "stop":
                consumer.stop()
                return await task
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                cancelled = True
            return consumer.stats

    stats = asyncio.run(main())
    return ran, stats, cancelled


@pytest.mark.parametrize("end", ["stop", "cancel"])
def test_stopping_gives_prefetched_jobs_back(
    client: Client, r: redis.Redis, redis_url: str, core: ModuleType, qname: str, end: str
) -> None:
    n = 2000
    ids = client.publish_many(qname, [{"i": i} for i in range(n)])
    ran, stats, cancelled = _slow_consumer_run(redis_url, core, qname, end)
    assert cancelled == (end == "cancel")
    assert len(ran) == len(set(ran)) == stats.succeeded  # every job that ran was acked
    by_state = states(r, qname, ids)
    # Nothing left leased: what did not run is back in its lane, its attempt unburned.
    assert by_state == Counter({"completed": len(ran), "wait": n - len(ran)})
    assert all(job_hash(r, qname, i).get("attempt", "0") == "0" for i in ids if i not in set(ran))


def test_sync_handlers_are_refused(redis_url: str, core: ModuleType, qname: str) -> None:
    async def main() -> None:
        async with AsyncClient(redis_url, _core=core) as ac:
            with pytest.raises(InvalidOptionType, match="async def"):
                AsyncConsumer(ac, qname, lambda ctx: None)

    asyncio.run(main())


def test_multi_consumer_consumes_every_queue(
    client: Client, redis_url: str, core: ModuleType, qname: str
) -> None:
    queues = [qname + "a", qname + "b"]
    for q in queues:
        client.publish_many(q, [{"q": q, "i": i} for i in range(30)])
    seen: Counter[str] = Counter()

    async def handler(ctx: JobCtx) -> None:
        seen[ctx.queue] += 1

    async def main() -> ConsumerStats:
        async with AsyncClient(redis_url, _core=core) as ac:
            return await AsyncMultiConsumer(ac, queues, handler, burst=True, concurrency=4).run()

    stats = asyncio.run(main())
    assert stats.succeeded == 60 and seen == Counter({q: 30 for q in queues})


def test_trips_go_ahead_while_jobs_are_queued_and_each_job_runs_once(
    client: Client, r: redis.Redis, redis_url: str, core: ModuleType, qname: str
) -> None:
    """On a busy queue the next trip (acks + reserve) is on the wire while the workers
    run the queued jobs: at times two trips are unanswered at once, never more, and still
    every job runs once and is acked once."""
    n = 2000
    ids = client.publish_many(qname, [{"i": i} for i in range(n)])
    seen: list[str] = []
    unanswered = most = 0

    async def handler(ctx: JobCtx) -> None:
        seen.append(ctx.job_id)

    async def main() -> ConsumerStats:
        nonlocal unanswered, most
        async with AsyncClient(redis_url, _core=core) as ac:
            engine = ac._engine
            real = engine.run_many

            async def counted(anchor: str, calls: Any, extra: Any = ()) -> Any:
                nonlocal unanswered, most
                unanswered += 1
                most = max(most, unanswered)
                try:
                    return await real(anchor, calls, extra)
                finally:
                    unanswered -= 1

            engine.run_many = counted  # type: ignore[method-assign]
            return await AsyncConsumer(ac, qname, handler, burst=True).run()

    stats = asyncio.run(main())
    assert stats.succeeded == n and stats.handled == n
    assert sorted(seen) == sorted(ids)
    assert most == 2
    assert states(r, qname, ids) == Counter({"completed": n})
