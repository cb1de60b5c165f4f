"""The consumer under load: concurrency, async handlers, prefetch, group limits, wake-ups.

On both shells (the ``shell`` fixture; tests/shells.py runs the same handlers on the async
consumer)."""

from __future__ import annotations

import asyncio
import threading
import time
from types import ModuleType
from typing import Any, Iterator

import pytest
import redis

from omniq_fast import Client, JobCtx

from shells import consumer_of, noop_for, patch_run_many, shell_name
from support import wait_until
from test_consumer import other, running, state_of, wait_state  # noqa: F401 (fixture)


@pytest.fixture
def client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    with shell(redis_url, _core=core) as c:
        yield c


class Overlap:
    """Counts handlers running at once (overall and per group)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def enter(self, *keys: str) -> None:
        with self.lock:
            for key in keys:
                self.now[key] = self.now.get(key, 0) + 1
                self.peak[key] = max(self.peak.get(key, 0), self.now[key])

    def leave(self, *keys: str) -> None:
        with self.lock:
            for key in keys:
                self.now[key] -= 1


def test_thread_concurrency_runs_n_handlers_at_once(client: Client, qname: str) -> None:
    ids = client.publish_many(qname, [{"i": i} for i in range(24)])
    overlap = Overlap()

    def handler(ctx: JobCtx) -> None:
        overlap.enter("all")
        time.sleep(0.05)
        overlap.leave("all")

    start = time.monotonic()
    stats = consumer_of(client, qname, handler, concurrency=8, max_jobs=24).run()
    elapsed = time.monotonic() - start
    assert stats.handled == stats.succeeded == 24
    assert overlap.peak["all"] == 8
    assert elapsed < 24 * 0.05 / 2  # far from one at a time
    assert all(state_of(client.redis, qname, i) in ("completed", None) for i in ids)


def test_async_handlers_run_on_an_event_loop(client: Client, qname: str) -> None:
    client.publish_many(qname, [{"i": i} for i in range(30)] + [{"fail": True}],
                        max_attempts=1)  # fmt: skip
    overlap = Overlap()
    loops: set[int] = set()

    async def handler(ctx: JobCtx) -> None:
        loops.add(id(asyncio.get_running_loop()))
        overlap.enter("all")
        await asyncio.sleep(0.03)
        overlap.leave("all")
        if ctx.payload.get("fail"):
            raise ValueError("async boom")

    stats = consumer_of(client, qname, handler, concurrency=10, max_jobs=31).run()
    assert stats.handled == 31 and stats.succeeded == 30 and stats.failed == 1
    assert 1 < overlap.peak["all"] <= 10
    assert len(loops) == 1
    failed = client.redis.lrange("{" + qname + "}:failed", 0, -1)
    assert len(failed) == 1
    error = client.redis.hget("{" + qname + "}:job:" + failed[0].decode(), "last_error")
    assert error.partition(b"\n")[0] == b"ValueError: async boom"


def test_group_limits_hold_under_concurrency(client: Client, qname: str) -> None:
    limits = {"g1": 1, "g2": 2, "g3": 3}
    order: dict[str, list[int]] = {g: [] for g in limits}
    jobs = []
    for i in range(8):
        for gid, limit in limits.items():
            jobs.append((gid, limit, i))
    for gid, limit, i in jobs:
        client.publish(qname, {"gid": gid, "i": i}, gid=gid, group_limit=limit)
    client.publish_many(qname, [{"gid": None, "i": i} for i in range(10)])
    overlap = Overlap()

    def handler(ctx: JobCtx) -> None:
        gid = ctx.gid or "none"
        overlap.enter(gid)
        if ctx.gid:
            with overlap.lock:
                order[gid].append(ctx.payload["i"])
        time.sleep(0.02)
        overlap.leave(gid)

    stats = consumer_of(client, qname, handler, concurrency=8, max_jobs=34).run()
    assert stats.succeeded == 34
    for gid, limit in limits.items():
        assert overlap.peak[gid] <= limit, (gid, overlap.peak)
    assert overlap.peak["g3"] > 1  # the limit, not a lack of concurrency, held it back
    assert order["g1"] == list(range(8))  # limit 1: strictly FIFO


def test_idle_consumer_wakes_on_publish(client: Client, qname: str) -> None:
    """With a 5 s poll, only the wake channel can explain a pickup within half a second."""
    started: list[float] = []
    with running(client, qname, lambda ctx: started.append(time.monotonic()),
                 poll_interval_s=5.0) as run:  # fmt: skip
        time.sleep(0.3)  # idle: the first poll found nothing
        sent = time.monotonic()
        client.publish(qname, {"x": 1})
        wait_until(lambda: started, "the job to start", 3)
        assert started[0] - sent < 0.5
        run.stop()


def warm_up(client: Client, qname: str, n: int = 20) -> None:
    """Publish jobs that finish at once, so the consumer learns handlers are fast and
    prefetches deeply (it prefetches nothing until it has seen a handler's time)."""
    client.publish_many(qname, [{"fast": True} for _ in range(n)])


def test_prefetched_jobs_are_heartbeated(client: Client, r: redis.Redis, qname: str) -> None:
    warm_up(client, qname)
    slow = client.publish(qname, {"slow": True}, timeout_ms=1500)
    later = client.publish_many(qname, [{"i": i} for i in range(5)], timeout_ms=1500)
    seen: list[tuple[str, int]] = []

    def handler(ctx: JobCtx) -> None:
        seen.append((ctx.job_id, ctx.attempt))
        if ctx.payload.get("slow"):
            time.sleep(2.5)  # the jobs prefetched behind it outlive their first lease

    with running(client, qname, handler, heartbeat_interval_s=0.3, reap_interval_s=0.2) as run:
        for job_id in [slow, *later]:
            wait_state(r, qname, job_id, "completed")
        stats = run.stop()
    # Nobody reaped them: every job ran once, on its first attempt.
    assert sorted(seen) == sorted((job_id, 1) for job_id, _ in seen)
    assert len(seen) == len({j for j, _ in seen}) == 26
    assert stats.lease_lost == 0


def test_graceful_stop_gives_prefetched_jobs_back(
    client: Client, r: redis.Redis, qname: str
) -> None:
    if shell_name(client) == "async":
        # The asyncio consumer does not prefetch everything behind a blocked handler (its
        # reserves follow its handlers' pace), so "all the rest is prefetched" is the
        # blocking consumer's claim; its own give-back is tested in tests/aio.
        pytest.skip("the blocking consumer's prefetch pattern")
    warm_up(client, qname)
    gate = threading.Event()
    blocker = client.publish(qname, {"block": True})
    rest = client.publish_many(qname, [{"i": i} for i in range(10)])
    # Reserve alternates lanes, so some grouped jobs run before the blocker and the others
    # are prefetched behind it.
    grouped = client.publish_many(qname, [{"g": i} for i in range(30)], gid="gg", group_limit=30)
    ran: list[str] = []

    def handler(ctx: JobCtx) -> None:
        ran.append(ctx.job_id)
        if ctx.payload.get("block"):
            gate.wait(10)

    base = "{" + qname + "}"
    with running(client, qname, handler) as run:
        wait_until(lambda: blocker in ran, "the blocking job to start")
        # Everything that has not run is prefetched behind the blocker, with a lease.
        assert r.llen(base + ":wait") == r.llen(base + ":g:gg:wait") == 0
        left = [j for j in rest + grouped if j not in ran]
        assert all(r.zscore(base + ":active", j) is not None for j in left)
        assert left and any(j in grouped for j in left)
        run.consumer.stop()
        gate.set()
        stats = run.stop()
    assert stats.succeeded == len(ran)
    assert r.zcard(base + ":active") == 0
    # Back at the head of their lanes, in their original order, as if never reserved.
    assert [x.decode() for x in r.lrange(base + ":wait", 0, -1)] == [j for j in rest if j in left]
    assert [x.decode() for x in r.lrange(base + ":g:gg:wait", 0, -1)] == [
        j for j in grouped if j in left
    ]
    for job_id in left:
        h = r.hgetall(base + ":job:" + job_id)
        assert h[b"state"] == b"wait" and h[b"attempt"] == b"0", h
        assert b"lease_token" not in h
    stats_hash = {k.decode(): int(v) for k, v in r.hgetall(base + ":stats").items()}
    assert stats_hash["active"] == 0
    assert stats_hash["waiting_total"] == len(left)
    assert r.get(base + ":g:gg:inflight") in (None, b"0")
    # And they are handed out again, each once, by the next consumer.
    again: list[str] = []
    consumer_of(client, qname, lambda ctx: again.append(ctx.job_id), max_jobs=len(left)).run()
    assert sorted(again) == sorted(left)


def test_acks_are_batched(client: Client, qname: str, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 400
    client.publish_many(qname, [{"i": i} for i in range(n)])
    trips: list[int] = []
    def counting(calls: Any, extra: Any, real: Any) -> Any:
        trips.append(len(calls))
        return real(calls, extra)

    patch_run_many(monkeypatch, client, counting)
    stats = consumer_of(client, qname, noop_for(client), max_jobs=n).run()
    assert stats.succeeded == n
    assert len(trips) < n / 5  # many jobs per round trip, not one or two each


def test_a_queue_that_ran_dry_is_not_asked_again_after_every_job(
    client: Client, r: redis.Redis, qname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a reserve comes back empty, the jobs still prefetched are worked off without a
    reserve per job: the next one waits for the poll interval or a wake message."""
    n = 3000
    ids = client.publish_many(qname, [{"i": i} for i in range(n)])
    reserves: list[int] = []
    def counting(calls: Any, extra: Any, real: Any) -> Any:
        reserves.extend(1 for s, _ in calls if s.name == "reserve_batch")
        return real(calls, extra)

    patch_run_many(monkeypatch, client, counting)
    # No-op handlers prefetch deep batches (up to 1000 when asked): when the queue runs dry
    # hundreds of jobs are in hand, and a reserve per job would show as hundreds.
    with running(client, qname, noop_for(client), poll_interval_s=0.05, prefetch=1000):
        wait_state(r, qname, ids[-1], "completed", timeout=30)
        done = len(reserves)
    assert r.llen(f"{{{qname}}}:wait") == 0
    assert done < 100, f"{done} reserves for {n} jobs"


def test_a_finished_job_keeps_its_lease_until_its_ack_goes_out(
    client: Client, other: Client, r: redis.Redis, qname: str
) -> None:
    """A, B and C are prefetched together. A runs, and the reserve its ack rides with finds
    the queue empty; B runs, and its ack waits to share a round trip while C runs inline
    for 2.2 s. B's lease (1.5 s) is kept alive by heartbeats until that ack is sent, so a
    reaper in between finds nothing to retry."""
    from omniq_fast import Job

    warm_up(client, qname)
    runs: list[str] = []
    started_c = threading.Event()

    def handler(ctx: JobCtx) -> None:
        runs.append(ctx.job_id)
        if ctx.payload.get("n") == "c":
            started_c.set()
            time.sleep(2.2)

    with running(client, qname, handler) as run:
        wait_until(lambda: len(runs) >= 20, "the warm-up jobs")
        a, b, c = client.publish_many(
            qname, [Job({"n": "a"}), Job({"n": "b"}, timeout_ms=1500), Job({"n": "c"})]
        )
        assert started_c.wait(5)
        time.sleep(1.8)  # past B's first lease
        assert other.reap_expired(qname) == 0
        wait_state(r, qname, c, "completed", timeout=10)
        stats = run.stop()
    assert [runs.count(job) for job in (a, b, c)] == [1, 1, 1]
    assert state_of(r, qname, b) == "completed"
    assert stats.lease_lost == 0
