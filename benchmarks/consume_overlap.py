"""How close the consumer runs to the server's limit: a no-op ``Consumer`` at the library's
defaults (concurrency 1, adaptive prefetch of at most 64) against a bare
``reserve_many(500)`` / ``ack_success_many`` loop, on one server, in one run.

    python benchmarks/consume_overlap.py [--jobs 20000] [--repeat 3] [--redis-url URL]

The loop is the reference: the fewest, largest script calls that can drain a queue, with
nothing else in the client. The consumer does more per job (a context per job, a handler
call, heartbeat bookkeeping, acks that wait at most ``ack_delay_s``) with far smaller
batches (a crash must cost few jobs an attempt); it keeps its next trip on the wire while
it runs the jobs in hand, so it is bound by the slower of client and server, not by their
sum. The target: consumer jobs/s >= 0.9 x the loop's, with the server >= 85% busy.

Each repeat runs both, in turn, on fresh queues of ``--jobs`` jobs and prints jobs/s, the
server's busy share (its ``INFO cpu`` time over the wall time) and the ratio. Without
``--redis-url`` (or ``REDIS_URL``) the server is an embedded one, so its CPU counters
measure this run alone. Loopback only; a few seconds a repeat.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from typing import Callable

import redis

from _server import drain, on_server
from omniq_fast import Client, Consumer


def server_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def queue_of(client: Client, jobs: int) -> str:
    name = "bench" + uuid.uuid4().hex[:10]
    client.publish_many(name, ({"i": i} for i in range(jobs)))
    return name


def timed(r: redis.Redis, jobs: int, work: Callable[[], None]) -> tuple[float, float]:
    """jobs/s of ``work`` and the server's busy share meanwhile."""
    cpu, started = server_cpu(r), time.perf_counter()
    work()
    wall = time.perf_counter() - started
    return jobs / wall, (server_cpu(r) - cpu) / wall


def loop_rate(url: str, r: redis.Redis, jobs: int) -> tuple[float, float]:
    with Client(url) as client:
        queue = queue_of(client, jobs)

        rate = timed(r, jobs, lambda: drain(client, queue, 500))
        client.redis.delete(*client.redis.keys("{" + queue + "}*"))
    return rate


def consumer_rate(url: str, r: redis.Redis, jobs: int) -> tuple[float, float]:
    with Client(url) as client:
        queue = queue_of(client, jobs)
        consumer = Consumer(client, queue, lambda ctx: None, burst=True, stop_on_ctrl_c=False)

        def work() -> None:
            stats = consumer.run()
            assert stats.succeeded == jobs, stats

        rate = timed(r, jobs, work)
        client.redis.delete(*client.redis.keys("{" + queue + "}*"))
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()

    def run(url: str) -> None:
        r = redis.Redis.from_url(url)
        print("| repeat | loop jobs/s | loop server busy | consumer jobs/s "
              "| consumer server busy | consumer / loop |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for i in range(args.repeat):
            loop, loop_busy = loop_rate(url, r, args.jobs)
            consumer, busy = consumer_rate(url, r, args.jobs)
            print(f"| {i + 1} | {loop:,.0f} | {loop_busy:.0%} | {consumer:,.0f} | {busy:.0%} "
                  f"| {consumer / loop:.2f} |")  # fmt: skip
        r.close()

    on_server(args.redis_url, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
