"""Side-by-side throughput of the official SDK and omniq-fast on one server, in one run.

    python benchmarks/compare.py [--jobs 20000] [--redis-url URL] [--json out.json]

Without ``--redis-url`` (or ``REDIS_URL``) it starts an embedded Valkey so that the
server's CPU counters measure this run alone. Rows:

* publish: official ``publish`` loop, omniq-fast ``publish`` loop (one thread, and four
  threads sharing one client), ``publish_many`` (compiled core and pure-Python twin);
  ``--publish-only`` runs these rows alone;
* drain: official ``consume`` (no-op handler, in a subprocess stopped with SIGTERM once the
  queue is empty), and a ``reserve_many`` / ``ack_success_many`` loop (both cores);
* consume: omniq-fast ``Consumer`` with a no-op handler at concurrency 1 and 8 (at the
  default prefetch and at prefetch 1000, the old deep default), and with a
  handler sleeping 10 ms at concurrency 8 and 64 (compare with the ideal N / 0.01 s).

For each: jobs/s, client CPU µs per job, server CPU µs per job (``INFO cpu`` deltas) and
how busy the server was (server CPU / wall time). Traffic goes to loopback only and every
row is bounded by ``--jobs``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Callable, Optional

import redis

from omniq_fast import Client, ReservedJob
from omniq_fast import _core_py
from _server import drain, on_server


@dataclass
class Row:
    name: str
    jobs: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "jobs_per_s": round(self.jobs_per_s),
            "client_cpu_us_per_job": round(self.client_cpu_s / self.jobs * 1e6, 2),
            "server_cpu_us_per_job": round(self.server_cpu_s / self.jobs * 1e6, 2),
            "server_busy": round(self.server_cpu_s / self.wall_s, 3),
        }


def server_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(name: str, jobs: int, r: redis.Redis, work: Callable[[], Optional[float]]) -> Row:
    """Run ``work``; it may return the client CPU it measured itself (a subprocess)."""
    s0, c0, t0 = server_cpu(r), time.process_time(), time.perf_counter()
    child_cpu = work()
    wall = time.perf_counter() - t0
    client = child_cpu if child_cpu is not None else time.process_time() - c0
    return Row(name, jobs, wall, client, server_cpu(r) - s0)


def official_client(url: str) -> Any:
    from omniq.client import OmniqClient as Official

    r = redis.Redis.from_url(url)
    kw = r.connection_pool.connection_kwargs
    return Official(host=kw["host"], port=kw["port"], db=kw.get("db", 0))


def fresh_queue() -> str:
    return "bench-" + uuid.uuid4().hex[:8]


def drop(r: redis.Redis, queue: str) -> None:
    keys = list(r.scan_iter(match="{" + queue + "}*", count=1000))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i : i + 1000])


def payload(i: int) -> dict[str, Any]:
    return {"i": i, "kind": "bench", "tags": ["a", "b"]}


# --------------------------------------------------------------------------- producers


def bench_publish(url: str, r: redis.Redis, jobs: int, cython: ModuleType) -> list[Row]:
    rows = []
    official = official_client(url)
    q = fresh_queue()
    rows.append(measure("official publish loop", jobs, r,
                        lambda: [official.publish(queue=q, payload=payload(i))
                                 for i in range(jobs)] and None))  # fmt: skip
    drop(r, q)
    for label, core in (("cython", cython), ("python", _core_py)):
        with Client(url, _core=core) as c:
            if label == "cython":
                q = fresh_queue()
                rows.append(measure(f"omniq-fast publish loop ({label})", jobs, r,
                                    lambda: [c.publish(q, payload(i)) for i in range(jobs)]
                                    and None))  # fmt: skip
                drop(r, q)
                q = fresh_queue()
                rows.append(measure(f"omniq-fast publish loop, {THREADS} threads on one client "
                                    f"({label})", jobs, r,
                                    lambda: publish_in_threads(c, q, jobs)))  # fmt: skip
                drop(r, q)
            q = fresh_queue()
            rows.append(measure(f"omniq-fast publish_many ({label})", jobs, r,
                                lambda: c.publish_many(q, (payload(i) for i in range(jobs)))
                                and None))  # fmt: skip
            drop(r, q)
    return rows


#: Threads of the shared-client publish row: more than the cores, as in a threaded web app.
THREADS = 4


def publish_in_threads(c: Client, queue: str, jobs: int) -> None:
    """``jobs`` publishes split over :data:`THREADS` threads sharing ``c`` (one of them at a
    time on the client's held connection, the others on pooled ones)."""

    def work(start: int) -> None:
        for i in range(start, jobs, THREADS):
            c.publish(queue, payload(i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --------------------------------------------------------------------------- consumers

_OFFICIAL_CONSUMER = textwrap.dedent(
    """
    import sys
    from omniq.client import OmniqClient
    host, port, db, queue = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    OmniqClient(host=host, port=port, db=db).consume(
        queue=queue, handler=lambda ctx: None, drain=True)
    """
)


def bench_official_consume(url: str, r: redis.Redis, jobs: int, cython: ModuleType) -> Row:
    q = fresh_queue()
    with Client(url, _core=cython) as c:
        c.publish_many(q, (payload(i) for i in range(jobs)))
    kw = r.connection_pool.connection_kwargs
    stats = "{" + q + "}:stats"

    def work() -> float:
        proc = subprocess.Popen(
            [sys.executable, "-c", _OFFICIAL_CONSUMER, kw["host"], str(kw["port"]),
             str(kw.get("db", 0)), q]
        )  # fmt: skip
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                done = r.hmget(stats, "waiting_total", "active")
                if int(done[0] or 0) == 0 and int(done[1] or 0) == 0 and r.exists("{" + q + "}:completed"):
                    break
                time.sleep(0.01)
            with open(f"/proc/{proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            cpu = (int(fields[11]) + int(fields[12])) / ticks
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        return cpu

    row = measure("official consume (no-op)", jobs, r, work)
    drop(r, q)
    return row


def bench_drain(url: str, r: redis.Redis, jobs: int, core: ModuleType, label: str) -> Row:
    q = fresh_queue()
    with Client(url, _core=core) as c:
        c.publish_many(q, (payload(i) for i in range(jobs)))

        row = measure(f"omniq-fast reserve_many/ack_success_many ({label})", jobs, r,
                      lambda: drain(c, q, 200))  # fmt: skip
    drop(r, q)
    return row


def bench_consume(url: str, r: redis.Redis, jobs: int, core: ModuleType,
                  concurrency: int, sleep_s: float, prefetch: Optional[int] = None) -> Row:  # fmt: skip
    from omniq_fast import Consumer

    q = fresh_queue()
    with Client(url, _core=core) as c:
        c.publish_many(q, (payload(i) for i in range(jobs)))

        def handler(ctx: Any) -> None:
            if sleep_s:
                time.sleep(sleep_s)

        consumer = Consumer(c, q, handler, concurrency=concurrency, max_jobs=jobs,
                            prefetch=prefetch)  # fmt: skip
        what = "no-op" if not sleep_s else f"{sleep_s * 1000:g} ms sleep"
        if prefetch is not None:
            what += f", prefetch {prefetch}"
        ideal = f", ideal {concurrency / sleep_s:,.0f}/s" if sleep_s else ""
        row = measure(f"omniq-fast consume ({what}, concurrency {concurrency}{ideal})",
                      jobs, r, lambda: consumer.run() and None)  # fmt: skip
    drop(r, q)
    return row


# --------------------------------------------------------------------------- report


def table(rows: list[Row]) -> str:
    head = f"| {'benchmark':<62} | {'jobs/s':>9} | {'client µs/job':>13} | {'server µs/job':>13} | {'server busy':>11} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for row in rows:
        d = row.as_dict()
        lines.append(
            f"| {row.name:<62} | {d['jobs_per_s']:>9,} | {d['client_cpu_us_per_job']:>13.1f} |"
            f" {d['server_cpu_us_per_job']:>13.1f} | {d['server_busy']:>10.0%} |"
        )
    return "\n".join(lines)


def run(url: str, jobs: int, consume_jobs: int, only_publish: bool = False) -> list[Row]:
    from omniq_fast import _core as cython  # the comparison needs the compiled core

    r = redis.Redis.from_url(url)
    rows = bench_publish(url, r, jobs, cython)
    if only_publish:
        return rows
    rows.append(bench_official_consume(url, r, consume_jobs, cython))
    rows.append(bench_drain(url, r, jobs, cython, "cython"))
    rows.append(bench_drain(url, r, jobs, _core_py, "python"))
    rows.append(bench_consume(url, r, jobs, cython, 1, 0.0))
    # The default prefetch is small so a crash costs few jobs an attempt; the deep prefetch
    # the consumer used before, side by side, prices that choice.
    rows.append(bench_consume(url, r, jobs, cython, 1, 0.0, prefetch=1000))
    rows.append(bench_consume(url, r, jobs, cython, 8, 0.0))
    rows.append(bench_consume(url, r, jobs, cython, 8, 0.0, prefetch=1000))
    rows.append(bench_consume(url, r, min(jobs, 4_000), cython, 8, 0.01))
    rows.append(bench_consume(url, r, min(jobs, 20_000), cython, 64, 0.01))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--consume-jobs", type=int, default=5_000,
                        help="jobs for the official consume row (it is slow)")  # fmt: skip
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--publish-only", action="store_true",
                        help="only the publish rows (a quick look at single calls)")  # fmt: skip
    args = parser.parse_args()
    rows = on_server(
        args.redis_url, lambda url: run(url, args.jobs, args.consume_jobs, args.publish_only)
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([row.as_dict() for row in rows], fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
