"""Jobs/s of AsyncConsumer against the blocking Consumer, no-op handlers, one server, one run.

Each round publishes ``--jobs`` jobs to a fresh queue, then consumes them until the queue is
empty (``burst=True``) and times that; the blocking Consumer runs a plain ``def`` handler,
the AsyncConsumer an ``async def`` one, at the same concurrency. Loopback only; a few
seconds. Prints jobs/s and the ratio async / sync (the target is >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from typing import Any

from omniq_fast import AsyncClient, Client, Consumer
from omniq_fast.aio.consumer import AsyncConsumer
from _server import on_server


def _queue(client: Client, jobs: int) -> str:
    name = "bench" + uuid.uuid4().hex[:10]
    client.publish_many(name, [{"i": i} for i in range(jobs)])
    return name


def sync_rate(url: str, jobs: int, concurrency: int) -> float:
    with Client(url) as client:
        queue = _queue(client, jobs)
        started = time.perf_counter()
        stats = Consumer(client, queue, lambda ctx: None, concurrency=concurrency,
                         burst=True, stop_on_ctrl_c=False).run()  # fmt: skip
        took = time.perf_counter() - started
        assert stats.succeeded == jobs, stats
        client.redis.delete(*client.redis.keys("{" + queue + "}*"))
    return jobs / took


def async_rate(url: str, jobs: int, concurrency: int) -> float:
    with Client(url) as client:
        queue = _queue(client, jobs)

    async def noop(ctx: Any) -> None:
        pass

    async def main() -> float:
        async with AsyncClient(url) as client:
            started = time.perf_counter()
            stats = await AsyncConsumer(client, queue, noop, concurrency=concurrency,
                                        burst=True, stop_on_ctrl_c=False).run()  # fmt: skip
            took = time.perf_counter() - started
            assert stats.succeeded == jobs, stats
        return jobs / took

    rate = asyncio.run(main())
    with Client(url) as client:
        client.redis.delete(*client.redis.keys("{" + queue + "}*"))
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2, help="best of this many per cell")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()

    def run(url: str) -> None:
        print("| concurrency | Consumer jobs/s | AsyncConsumer jobs/s | async / sync |")
        print("|---|---|---|---|")
        for concurrency in (1, 64):
            # Alternated rounds, best of each: a loaded machine hurts both sides alike.
            sync, aio = 0.0, 0.0
            for _ in range(args.rounds):
                sync = max(sync, sync_rate(url, args.jobs, concurrency))
                aio = max(aio, async_rate(url, args.jobs, concurrency))
            print(f"| {concurrency} | {sync:,.0f} | {aio:,.0f} | {aio / sync:.2f} |")

    on_server(args.redis_url, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
