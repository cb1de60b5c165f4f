"""What automatic pipelining buys: 1,000 tasks each awaiting one publish, at once.

    python benchmarks/async_publish.py [--jobs 1000] [--rounds 5] [--repeat 3] [--redis-url URL]

Three ways to queue the same count of jobs on one loopback server:

* ``AsyncClient``: N tasks, each ``await client.publish(...)``; the calls of one event-loop
  turn share one write, the replies one read loop.
* ``Client.publish_many`` (blocking): the same jobs, 500 per script call.
* ``redis.asyncio``: N tasks, each running the same ``enqueue`` script with the same ARGV
  by one EVALSHA on its stock connection pool (no wake PUBLISH: ours sends one per job
  too, so the comparison leans in redis.asyncio's favour).

Each round queues N jobs on a fresh queue; the best round of each counts (the machine is
shared, the best is the least disturbed). The three ways take turns, ``--repeat`` times
in one run, each time with both ratios printed, then their spread. The server is an
embedded one unless ``--redis-url`` is given. Bounded: a few seconds a repeat.

Also printed, for the best round: the server's own time per job (``INFO commandstats``:
the EVALSHA and PUBLISH microseconds) and the client process's CPU time per job
(``time.process_time``; the embedded server is another process). What bounds each way
reads from them: redis.asyncio is bound by its client CPU (one stock command per task),
``publish_many`` by the server's script time, and the coalesced publishes by that same
server time (their batches are ``enqueue_batch`` calls too) plus their client time, which
the server does not overlap: the batch is sent after the loop turn that made it.
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
from _server import on_server
from omniq_fast.keys import queue_anchor
from omniq_fast._options import enqueue_options
from omniq_fast._scripts import script

ENQUEUE = script("enqueue")


class Timer:
    """Wall time, client CPU time and the server's EVALSHA + PUBLISH microseconds of the
    timed section."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url)

    def _usec(self) -> int:
        stats = self.r.info("commandstats")
        commands = ("evalsha", "publish")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in commands)

    def __enter__(self) -> "Timer":
        self.usec = self._usec()
        self.cpu = time.process_time()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
        self.cpu = time.process_time() - self.cpu
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
    # A hundred at a time (a thousand connects at once can time out on a loaded machine),
    # then all n at once, so the timed round finds n idle connections in the pool.
    for start in range(0, n, 100):
        await asyncio.gather(*(publish(queue + "w", i) for i in range(start, min(n, start + 100))))
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


def best(
    rounds: int, run: Callable[[str], Any], url: str, n: int
) -> tuple[float, float, float]:
    """The best round's jobs/s, and the server's and the client's CPU microseconds per job
    in that round."""
    rounds_seen: list[tuple[float, float, float]] = []
    r = redis.Redis.from_url(url)
    for _ in range(rounds):
        queue = "bench" + uuid.uuid4().hex[:8]
        result = run(queue)
        timer = asyncio.run(result) if isinstance(result, Awaitable) else result
        rounds_seen.append((timer.elapsed, timer.usec / n, timer.cpu * 1e6 / n))
        assert r.llen("{" + queue + "}:wait") == n, "every job must be queued"
        keys = list(r.scan_iter(match="{" + queue + "*"))
        if keys:
            r.delete(*keys)
    r.close()
    elapsed, server, client = min(rounds_seen)
    return n / elapsed, server, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    n = args.jobs
    mine_name, bulk_name, stock_name = (
        "AsyncClient, 1 publish per task", "Client.publish_many (blocking)",
        "redis.asyncio, 1 EVALSHA per task",
    )  # fmt: skip

    def measure(url: str) -> None:
        ratios: list[tuple[float, float]] = []
        for repeat in range(1, args.repeat + 1):
            rates = {
                mine_name: best(args.rounds, lambda q: ours(url, n, q), url, n),
                bulk_name: best(args.rounds, lambda q: bulk(url, n, q), url, n),
                stock_name: best(args.rounds, lambda q: stock(url, n, q), url, n),
            }
            print(f"repeat {repeat}/{args.repeat}")
            for name, (rate, server, client) in rates.items():
                print(f"  {name:36s} {rate:>10,.0f} jobs/s   server {server:5.1f} us/job"
                      f"   client CPU {client:5.1f} us/job")  # fmt: skip
            mine, server, _ = rates[mine_name]
            to_bulk, to_stock = mine / rates[bulk_name][0], mine / rates[stock_name][0]
            ratios.append((to_bulk, to_stock))
            print(f"  AsyncClient / publish_many: {to_bulk:.2f}")
            print(f"  AsyncClient / redis.asyncio: {to_stock:.1f}x")
            print(f"  AsyncClient / the server's own ceiling for its batches "
                  f"({1e6 / server:,.0f} jobs/s): {mine * server / 1e6:.2f}")  # fmt: skip
        to_bulk = sorted(r[0] for r in ratios)
        to_stock = sorted(r[1] for r in ratios)
        print(f"over {len(ratios)} repeats: AsyncClient / publish_many "
              f"{', '.join(f'{r:.2f}' for r in to_bulk)}; AsyncClient / redis.asyncio "
              f"{', '.join(f'{r:.1f}x' for r in to_stock)}")  # fmt: skip

    on_server(args.redis_url, measure)


if __name__ == "__main__":
    main()
