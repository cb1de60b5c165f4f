"""Publish → handler-start latency with an idle consumer, and what an idle consumer costs.

    python benchmarks/latency.py [--jobs 1000] [--redis-url URL]

For omniq-fast and for the official SDK: an idle consumer waits on a queue; single jobs are
published one at a time (each after the previous one started); the handler records when it
started. Reports p50 / p99 / max of the delay, then the commands per second the server
runs for a consumer that has nothing to do. Consumers run in subprocesses (the official
consumer cannot be stopped from inside its process); the server is an embedded one unless
``--redis-url`` is given, so its command counters measure this run alone.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import uuid

import redis

from omniq_fast import Client
from omniq_fast._protocol import calls
from omniq_fast.testing import EmbeddedServer

_CONSUMER = textwrap.dedent(
    """
    import sys, time, redis
    url, queue, which = sys.argv[1], sys.argv[2], sys.argv[3]
    r = redis.Redis.from_url(url)
    mark = "{" + queue + "}:bench:started"

    def handler(ctx):
        r.rpush(mark, time.time_ns())

    if which == "official":
        from omniq.client import OmniqClient
        kw = r.connection_pool.connection_kwargs
        OmniqClient(host=kw["host"], port=kw["port"], db=kw.get("db", 0)).consume(
            queue=queue, handler=handler)
    else:
        from omniq_fast import Client, Consumer
        Consumer(Client(url), queue, handler).run()
    """
)


# Commands a client sends at top level. INFO's counters also count the commands scripts run
# inside (GET, LPOP... of a reserve), which are part of one EVALSHA, not extra requests.
_TOP_LEVEL = ("evalsha", "eval", "script", "publish", "subscribe", "ping", "hello", "client",
              "select")  # fmt: skip


def _total_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in _TOP_LEVEL)


def measure(url: str, which: str, jobs: int) -> dict[str, float]:
    r = redis.Redis.from_url(url)
    queue = f"lat-{which}-" + uuid.uuid4().hex[:6]
    mark = "{" + queue + "}:bench:started"
    proc = subprocess.Popen([sys.executable, "-c", _CONSUMER, url, queue, which])
    try:
        with Client(url) as producer:
            producer.publish(queue, {"warm": True})  # the consumer is up and idle after this
            deadline = time.monotonic() + 30
            while r.llen(mark) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)
            # Idle cost: commands the server runs per second while nothing is queued.
            before, t0 = _total_calls(r), time.monotonic()
            time.sleep(3.0)
            idle_rate = (_total_calls(r) - before) / (time.monotonic() - t0)
            delays = []
            for i in range(jobs):
                sent = time.time_ns()
                if which == "official":
                    # An official producer: no wake-up notification, as other SDKs send.
                    call = calls.publish(producer._core, queue, {}, f"j{i}", 3, 30000, 5000,
                                         0, None, 0, sent // 1_000_000)  # fmt: skip
                    producer._engine.run(call.without_wake())
                else:
                    producer.publish(queue, {"i": i})
                while r.llen(mark) < i + 2:
                    time.sleep(0.0002)
                started = int(r.lindex(mark, -1))
                delays.append((started - sent) / 1e6)
                time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        keys = list(r.scan_iter(match="{" + queue + "}*"))
        if keys:
            r.delete(*keys)
    delays.sort()
    return {
        "p50_ms": statistics.median(delays),
        "p99_ms": delays[int(len(delays) * 0.99) - 1],
        "max_ms": delays[-1],
        "idle_commands_per_s": idle_rate,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()

    def run(url: str) -> None:
        print(f"| consumer | p50 ms | p99 ms | max ms | idle commands/s |")
        print(f"|---|---|---|---|---|")
        for which in ("omniq-fast", "official"):
            m = measure(url, which, args.jobs)
            print(f"| {which} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['max_ms']:.2f} |"
                  f" {m['idle_commands_per_s']:.1f} |")  # fmt: skip

    if args.redis_url:
        run(args.redis_url)
    else:
        with EmbeddedServer() as server:
            run(server.url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
