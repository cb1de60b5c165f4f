"""``omniq-fast demo``: publish a realistic mix of jobs, consume them all, check every outcome.

Without ``--redis-url`` (or ``REDIS_URL``) it runs on an embedded Valkey server. The mix:
ungrouped jobs, grouped jobs under concurrency limits, a few delayed jobs, some that fail
once and succeed on retry, and a couple that use up their attempts. The exit status is 0
only if every job ended in the state it should.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from .client import Client, now_ms
from .errors import InvalidArgument
from ._options import check_int
from .consumer import Consumer, JobCtx
from .keys import queue_base
from .types import Job
from .testing import EmbeddedServer
from .monitor import QueueMonitor

__all__ = ["run_demo", "DemoResult"]

_GROUPS = 30
#: Most jobs one demo run takes (its plan and its checks are held in memory).
MAX_DEMO_JOBS = 10_000_000
_DEADLINE_S = 300.0


@dataclass
class DemoResult:
    """What the demo saw; ``ok`` is the exit verdict."""

    jobs: int
    final_states: Counter[str]
    handler_calls: int
    publish_s: float
    consume_s: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _plan(jobs: int) -> list[tuple[str, Optional[str]]]:
    """(kind, gid) per job: kinds are ok, delayed, fail_once, exhaust."""
    plan: list[tuple[str, Optional[str]]] = []
    for i in range(jobs):
        if i % 1000 == 999 and i < 2000:
            kind = "exhaust"  # two of them in a 10,000-job run
        elif i % 100 == 50:
            kind = "fail_once"
        elif i % 200 == 7:
            kind = "delayed"
        else:
            kind = "ok"
        gid = f"tenant-{i % _GROUPS}" if i % 3 == 0 else None
        plan.append((kind, gid))
    return plan


def run_demo(url: str, jobs: int = 10_000, say: Optional[Callable[[str], object]] = print) -> DemoResult:
    """Publish ``jobs`` jobs on a fresh queue of the server at ``url`` and consume them."""
    out = say or (lambda _text: None)
    queue = "omniq-fast-demo-" + uuid.uuid4().hex[:8]
    plan = _plan(jobs)
    successes: Counter[str] = Counter()
    calls = 0
    lock = threading.Lock()

    with Client(url) as client:
        t0 = time.perf_counter()
        start = now_ms()
        ids = client.publish_many(
            queue,
            (
                Job(
                    {"i": i, "kind": kind},
                    gid=gid,
                    group_limit=(2 if gid and i % 2 == 0 else 0),
                    due_ms=start + 300 if kind == "delayed" else 0,
                    max_attempts=2 if kind == "exhaust" else 3,
                )
                for i, (kind, gid) in enumerate(plan)
            ),
            backoff_ms=50,
        )
        kinds = dict(zip(ids, (kind for kind, _ in plan)))
        publish_s = time.perf_counter() - t0
        out(f"published {jobs} jobs on {queue} in {publish_s:.2f}s ({jobs / publish_s:,.0f} jobs/s)")

        expected_calls = sum(
            {"ok": 1, "delayed": 1, "fail_once": 2, "exhaust": 2}[kind] for kind, _ in plan
        )

        def handler(ctx: JobCtx) -> None:
            nonlocal calls
            with lock:
                calls += 1
            kind = ctx.payload["kind"]
            if kind == "exhaust" or (kind == "fail_once" and ctx.attempt == 1):
                raise RuntimeError(f"demo failure of a {kind} job")
            with lock:
                successes[ctx.job_id] += 1

        consumer = Consumer(
            client, queue, handler, poll_interval_s=0.01, promote_interval_s=0.05,
            reap_interval_s=1.0, max_jobs=expected_calls, concurrency=4,
        )  # fmt: skip
        watchdog = threading.Timer(_DEADLINE_S, consumer.stop)
        watchdog.daemon = True
        watchdog.start()
        t1 = time.perf_counter()
        consumer.run()
        consume_s = time.perf_counter() - t1
        watchdog.cancel()

        result = DemoResult(jobs, Counter(), calls, publish_s, consume_s)
        monitor = QueueMonitor(client)
        failed_ids = {job.job_id for job in monitor.lane_page(queue, "failed", limit=25)}
        for job_id, kind in kinds.items():
            if job_id in failed_ids:
                result.final_states["failed"] += 1
                if kind != "exhaust":
                    result.problems.append(f"{kind} job {job_id} failed")
            elif successes[job_id] == 1:
                result.final_states["completed"] += 1
                if kind == "exhaust":
                    result.problems.append(f"exhaust job {job_id} completed")
            else:
                result.final_states["unfinished"] += 1
                result.problems.append(f"{kind} job {job_id} ran {successes[job_id]} times")
        stats = monitor.stats(queue)
        expected = {"waiting_total": 0, "active": 0, "delayed": 0, "failed": len(failed_ids)}
        for name, value in expected.items():
            if getattr(stats, name) != value:
                result.problems.append(f"stats {name} is {getattr(stats, name)}, not {value}")
        # The demo's queue is ours alone: remove every key it made.
        keys = list(client.redis.scan_iter(match=queue_base(queue) + "*", count=1000))
        if keys:
            client.redis.delete(*keys)

    total = publish_s + consume_s
    out(f"consumed in {consume_s:.2f}s ({calls:,} handler calls, {calls / consume_s:,.0f} calls/s)")
    for state in ("completed", "failed", "unfinished"):
        out(f"  {state:<10} {result.final_states[state]:>6}")
    out(f"total {total:.2f}s, {jobs / total:,.0f} jobs/s end to end")
    for problem in result.problems[:20]:
        out(f"PROBLEM: {problem}")
    out("OK: every job reached the state it should" if result.ok else "FAILED")
    return result


def main(url: Optional[str], jobs: int) -> int:
    """Run the demo on ``url``, or on an embedded server when it is ``None``.

    Returns the exit status: 0 if every job ended as it should, 1 if not, 2 for a bad
    argument (checked here, whatever parses the command line, before anything starts)."""
    try:
        check_int("--jobs", jobs, 1, MAX_DEMO_JOBS)
    except InvalidArgument as exc:
        print(f"omniq-fast demo: error: {exc}", file=sys.stderr)
        return 2
    url = url or os.environ.get("REDIS_URL")
    if url:
        return 0 if run_demo(url, jobs).ok else 1
    with EmbeddedServer() as server:
        print(f"started embedded server at {server.url}")
        return 0 if run_demo(server.url, jobs).ok else 1
