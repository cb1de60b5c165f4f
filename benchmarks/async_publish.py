"""What automatic pipelining buys: 1,000 tasks each awaiting one publish, at once.

    python benchmarks/async_publish.py [--jobs 1000] [--rounds 5] [--redis-url URL]

Three ways to queue the same count of jobs on one loopback server:

* ``AsyncClient``: N tasks, each ``await client.publish(...)``; the calls of one event-loop
  turn share one write, the replies one read loop.
* ``Client.publish_many`` (blocking): the same jobs, 500 per script call.
* ``redis.asyncio``: N tasks, each running the same ``enqueue`` script with the same ARGV
  by one EVALSHA (and the same wake PUBLISH), on its stock connection pool.

Each round queues N jobs on a fresh queue; the best round of each counts (the machine is
shared, the best is the least disturbed). The server is an embedded one unless
``--redis-url`` is given. Bounded: a few seconds in all.
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
from omniq_fast.embedded import EmbeddedServer
from omniq_fast.keys import queue_anchor, wake_channel
from omniq_fast.options import enqueue_options
from omniq_fast.scripts import script

ENQUEUE = script("enqueue")


async def ours(url: str, n: int, queue: str) -> float:
    async with AsyncClient(url) as c:
        await c.publish(queue + "w", {"warm": 1})  # connected, script loaded
        start = time.perf_counter()
        await asyncio.gather(*(c.publish(queue, {"i": i}) for i in range(n)))
        return time.perf_counter() - start


async def stock(url: str, n: int, queue: str) -> float:
    """Each task sends the enqueue our publish sends: the same script, ARGV and wake."""
    r = aredis.Redis.from_url(url, max_connections=n)
    attempts, timeout, backoff, due, gid, limit = enqueue_options(3, 30000, 5000, 0, None, 0)
    await r.script_load(ENQUEUE.source)

    async def publish(q: str, i: int) -> None:
        argv = (core.new_ulid(), core.dumps_payload({"i": i}), attempts, timeout, backoff,
                now_ms(), due, gid, limit)  # fmt: skip
        await r.evalsha(ENQUEUE.sha.decode(), 1, queue_anchor(q), *argv)
        await r.publish(wake_channel(q), 1)

    # The pool's connections open first, on another queue: only the publishes are timed.
    await asyncio.gather(*(publish(queue + "w", i) for i in range(n)))
    start = time.perf_counter()
    await asyncio.gather(*(publish(queue, i) for i in range(n)))
    elapsed = time.perf_counter() - start
    await r.aclose()
    return elapsed


def bulk(url: str, n: int, queue: str) -> float:
    with Client(url) as c:
        c.publish(queue + "w", {"warm": 1})
        start = time.perf_counter()
        c.publish_many(queue, [{"i": i} for i in range(n)])
        return time.perf_counter() - start


def best(rounds: int, run: Callable[[str], Any], url: str, n: int) -> float:
    times = []
    r = redis.Redis.from_url(url)
    for _ in range(rounds):
        queue = "bench" + uuid.uuid4().hex[:8]
        result = run(queue)
        times.append(asyncio.run(result) if isinstance(result, Awaitable) else result)
        assert r.llen("{" + queue + "}:wait") == n, "every job must be queued"
        keys = list(r.scan_iter(match="{" + queue + "*"))
        if keys:
            r.delete(*keys)
    r.close()
    return n / min(times)


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
        for name, rate in rates.items():
            print(f"{name:36s} {rate:>10,.0f} jobs/s")
        mine = rates["AsyncClient, 1 publish per task"]
        print(f"AsyncClient / publish_many: {mine / rates['Client.publish_many (blocking)']:.2f}")
        print(f"AsyncClient / redis.asyncio: {mine / rates['redis.asyncio, 1 EVALSHA per task']:.1f}x")

    if args.redis_url:
        measure(args.redis_url)
    else:
        with EmbeddedServer() as server:
            measure(server.url)


if __name__ == "__main__":
    main()
