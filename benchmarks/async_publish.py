"""What automatic pipelining buys: 1,000 tasks each awaiting one publish, at once.

    python benchmarks/async_publish.py [--jobs 1000] [--rounds 5] [--redis-url URL]

Three ways to queue the same count of jobs on one loopback server:

* ``AsyncClient``: N tasks, each ``await client.publish(...)``; the calls of one event-loop
  turn share one write, the replies one read loop.
* ``Client.publish_many`` (blocking): the same jobs, 500 per script call.
* ``redis.asyncio``: N tasks, each running the same ``enqueue`` script with the same ARGV
  by one EVALSHA on its stock connection pool (no wake PUBLISH: ours sends one per job
  too, so the comparison leans in redis.asyncio's favour).

Each round queues N jobs on a fresh queue; the best round of each counts (the machine is
shared, the best is the least disturbed). The server is an embedded one unless
``--redis-url`` is given. Bounded: a few seconds in all.

Also printed: the server's own time per job (``INFO commandstats``: the EVALSHA and PUBLISH
microseconds of the best round), and the rate it allows. N single ``enqueue`` calls cost
the server several times what two 500-job ``enqueue_batch`` calls cost, so one publish per
task can never reach ``publish_many``'s rate; how close the client comes to that ceiling
is what pipelining decides.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any, Awaitable, Callable

import redis
import redis.asyncio as aredis

from omniq_fast import AsyncClient, Client, now_ms
from omniq_fast import _compat as core
from omniq_fast.testing import EmbeddedServer
from omniq_fast.keys import queue_anchor
from omniq_fast._options import enqueue_options
from omniq_fast._scripts import script

ENQUEUE = script("enqueue")


class Timer:
    """Wall time and the server's EVALSHA + PUBLISH microseconds of the timed section."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url)

    def _usec(self) -> int:
        stats = self.r.info("commandstats")
        commands = ("evalsha", "publish")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in commands)

    def __enter__(self) -> "Timer":
        self.usec = self._usec()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
        self.usec = self._usec() - self.usec
        self.r.close()


async def ours(url: str, n: int, queue: str) -> Timer:
    async with AsyncClient(url) as c:
        await c.publish(queue + "w", {"warm": 1})  # connected, script loaded
        with Timer(url) as timer:
            await asyncio.gather(*(c.publish(queue, {"i": i}) for i in range(n)))
        return timer


async def stock(url: str, n: int, queue: str) -> Timer:
    """Each task sends the enqueue our publish sends: the same script and ARGV."""
    r = aredis.Redis.from_url(url, max_connections=n)
    attempts, timeout, backoff, due, gid, limit = enqueue_options(3, 30000, 5000, 0, None, 0)
    await r.script_load(ENQUEUE.source)

    async def publish(q: str, i: int) -> None:
        argv = (core.new_ulid(), core.dumps_payload({"i": i}), attempts, timeout, backoff,
                now_ms(), due, gid, limit)  # fmt: skip
        await r.evalsha(ENQUEUE.sha.decode(), 1, queue_anchor(q), *argv)

    # The pool's connections open first, on another queue: only the publishes are timed.
    await asyncio.gather(*(publish(queue + "w", i) for i in range(n)))
    with Timer(url) as timer:
        await asyncio.gather(*(publish(queue, i) for i in range(n)))
    await r.aclose()
    return timer


def bulk(url: str, n: int, queue: str) -> Timer:
    with Client(url) as c:
        c.publish(queue + "w", {"warm": 1})
        with Timer(url) as timer:
            c.publish_many(queue, [{"i": i} for i in range(n)])
        return timer


def best(rounds: int, run: Callable[[str], Any], url: str, n: int) -> tuple[float, float]:
    """The best round's jobs/s, and the server's microseconds per job in that round."""
    rounds_seen: list[tuple[float, float]] = []
    r = redis.Redis.from_url(url)
    for _ in range(rounds):
        queue = "bench" + uuid.uuid4().hex[:8]
        result = run(queue)
        timer = asyncio.run(result) if isinstance(result, Awaitable) else result
        rounds_seen.append((timer.elapsed, timer.usec / n))
        assert r.llen("{" + queue + "}:wait") == n, "every job must be queued"
        keys = list(r.scan_iter(match="{" + queue + "*"))
        if keys:
            r.delete(*keys)
    r.close()
    elapsed, server = min(rounds_seen)
    return n / elapsed, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    n = args.jobs

    def measure(url: str) -> None:
        rates = {
            "AsyncClient, 1 publish per task": best(args.rounds, lambda q: ours(url, n, q), url, n),
            "Client.publish_many (blocking)": best(args.rounds, lambda q: bulk(url, n, q), url, n),
            "redis.asyncio, 1 EVALSHA per task": best(
                args.rounds, lambda q: stock(url, n, q), url, n
            ),
        }
        for name, (rate, server) in rates.items():
            print(f"{name:36s} {rate:>10,.0f} jobs/s   server {server:5.1f} us/job")
        mine, server = rates["AsyncClient, 1 publish per task"]
        bulk_rate = rates["Client.publish_many (blocking)"][0]
        stock_rate = rates["redis.asyncio, 1 EVALSHA per task"][0]
        print(f"AsyncClient / publish_many: {mine / bulk_rate:.2f}")
        print(f"AsyncClient / redis.asyncio: {mine / stock_rate:.1f}x")
        print(f"AsyncClient / the server's own ceiling for single publishes "
              f"({1e6 / server:,.0f} jobs/s): {mine * server / 1e6:.2f}")

    if args.redis_url:
        measure(args.redis_url)
    else:
        with EmbeddedServer() as server:
            measure(server.url)


if __name__ == "__main__":
    main()
