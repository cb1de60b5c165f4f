"""Publish → handler-start latency with an idle consumer, and what an idle consumer costs.

    python benchmarks/latency.py [--jobs 300] [--gap-ms 30] [--concurrency 1] [--redis-url URL]

An idle consumer waits on a queue; single jobs are published one at a time, each at least
``--gap-ms`` after the previous one's handler started (the consumer is fully idle again:
its reserve found nothing); the handler writes the time it started to a pipe. Pickup is
handler start minus the moment ``publish`` was called. ``--concurrency`` is our consumer's
(1: the handler runs on the dispatcher's thread; more: on a worker thread). Rows, side by
side in one run:

* omniq-fast consumer, omniq-fast producer (its wake message, or key tracking);
* omniq-fast consumer, the official SDK's producer (``omniq`` ``publish``: no wake
  message, so only key tracking, or the poll, can find the job);
* the official consumer and producer, for reference.

Idle commands/s: INFO ``total_commands_processed`` (which counts the commands scripts run
inside) over 10 s while the consumer has nothing to do, less our own INFO calls. Consumers
run in subprocesses; the server is an embedded one unless ``--redis-url`` is given, so its
counters measure this run alone.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any, Callable

import redis

from omniq_fast import Client
from _server import on_server

_CONSUMER = textwrap.dedent(
    """
    import os, sys, time
    url, queue, which, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    out = sys.stdout.fileno()

    def handler(ctx):
        os.write(out, b"%d\\n" % time.time_ns())

    if which == "official":
        import redis
        from omniq.client import OmniqClient
        kw = redis.Redis.from_url(url).connection_pool.connection_kwargs
        OmniqClient(host=kw["host"], port=kw["port"], db=kw.get("db", 0)).consume(
            queue=queue, handler=handler)
    else:
        from omniq_fast import Client, Consumer
        Consumer(Client(url), queue, handler, concurrency=concurrency).run()
    """
)


class _Started:
    """Handler start times, read from the consumer's stdout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._buf = b""

    def next(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                raise TimeoutError("the consumer did not start the job")
            chunk = os.read(self._fd, 4096)
            if not chunk:
                raise RuntimeError("the consumer exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return int(line)


#: Long enough to include a tracked consumer's 5 s safety-net poll.
_IDLE_S = 10.0


def _commands(r: redis.Redis) -> int:
    return int(r.info("stats")["total_commands_processed"])


def measure(
    url: str, consumer: str, producer: str, jobs: int, gap_s: float, concurrency: int = 1
) -> dict[str, float]:
    r = redis.Redis.from_url(url)
    queue = f"lat-{consumer[:4]}-{producer[:4]}-" + uuid.uuid4().hex[:6]
    proc = subprocess.Popen([sys.executable, "-c", _CONSUMER, url, queue, consumer,
                             str(concurrency)], stdout=subprocess.PIPE)  # fmt: skip
    started = _Started(proc)
    ours = Client(url)
    publish: Callable[[int], Any]
    if producer == "official":
        from omniq.client import OmniqClient

        kw = r.connection_pool.connection_kwargs
        official = OmniqClient(host=kw["host"], port=kw["port"], db=kw.get("db", 0))
        publish = lambda i: official.publish(queue=queue, payload={"i": i})  # noqa: E731
    else:
        publish = lambda i: ours.publish(queue, {"i": i})  # noqa: E731
    try:
        ours.publish(queue, {"warm": True})  # the consumer is up and idle after this
        started.next()
        time.sleep(1.0)
        # Idle cost: commands the server runs per second while nothing is queued.
        before, t0 = _commands(r), time.monotonic()
        time.sleep(_IDLE_S)
        idle_rate = (_commands(r) - before - 1) / (time.monotonic() - t0)
        delays = []
        for i in range(jobs):
            time.sleep(gap_s)
            sent = time.time_ns()
            publish(i)
            delays.append((started.next() - sent) / 1e6)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        ours.close()
        keys = list(r.scan_iter(match="{" + queue + "}*"))
        if keys:
            r.delete(*keys)
        r.close()
    delays.sort()
    return {
        "p50_ms": statistics.median(delays),
        "p99_ms": delays[max(0, int(len(delays) * 0.99) - 1)],
        "max_ms": delays[-1],
        "idle_commands_per_s": idle_rate,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=1, help="our consumer's")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()

    def run(url: str) -> None:
        print("| consumer | producer | pickup p50 ms | p99 ms | max ms | idle commands/s |")
        print("|---|---|---|---|---|---|")
        for consumer, producer in (
            ("omniq-fast", "omniq-fast"), ("omniq-fast", "official"), ("official", "official"),
        ):  # fmt: skip
            m = measure(url, consumer, producer, args.jobs, args.gap_ms / 1000, args.concurrency)
            print(f"| {consumer} | {producer} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |"
                  f" {m['max_ms']:.2f} | {m['idle_commands_per_s']:.1f} |", flush=True)  # fmt: skip

    on_server(args.redis_url, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
