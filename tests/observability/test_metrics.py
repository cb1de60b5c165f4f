"""Worker metrics against a real server: jobs consumed with a WorkerMetrics observer, the
real HTTP endpoint scraped and parsed with prometheus_client's parser, counters compared
with what the consumer did and what Redis holds; then two real worker processes writing
to one multiprocess directory, summed by the supervisor's endpoint."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from types import ModuleType
from typing import Any, Iterator, Optional

import pytest
import redis
from prometheus_client import CollectorRegistry

from metrics_support import scrape, value
from omniq_fast import Client, Consumer, Exec, JobCtx
from omniq_fast.testing import free_ports
from omniq_fast.metrics import (
    MULTIPROC_ENV,
    WorkerMetrics,
    mark_process_dead,
    pickup_delay_s,
    prepare_multiprocess,
    serve_multiprocess_metrics,
    serve_worker_metrics,
)
from omniq_fast.observe import OUTCOMES, ObserverGuard
from support import job_hash, wait_until
from test_consumer import running

OK_JOBS = 20
FAILING_JOBS = 5


@pytest.fixture
def client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    """Our client on both shells (its consumers: Consumer and AsyncConsumer)."""
    with shell(redis_url, _core=core) as c:
        yield c


@pytest.fixture
def served() -> Iterator[tuple[WorkerMetrics, int]]:
    """A WorkerMetrics on a private registry, served on a free loopback port."""
    port = free_ports(1)[0]
    metrics = serve_worker_metrics(port, host="127.0.0.1", registry=CollectorRegistry())
    yield metrics, port
    metrics.close()


def _handler(mode: str) -> Any:
    def work(ctx: JobCtx) -> None:
        if ctx.payload.get("slow"):
            time.sleep(1.5)  # far past its 300 ms lease: reaped meanwhile
        if ctx.payload.get("fail"):
            raise RuntimeError("boom")

    async def work_async(ctx: JobCtx) -> None:
        if ctx.payload.get("slow"):
            await asyncio.sleep(1.5)
        if ctx.payload.get("fail"):
            raise RuntimeError("boom")

    return work_async if mode == "async" else work


@pytest.mark.parametrize(
    "mode, concurrency", [("inline", 1), ("threads", 4), ("async", 4)], ids=lambda v: str(v)
)
def test_counters_equal_the_jobs_processed(
    client: Client, r: redis.Redis, qname: str, served: tuple[WorkerMetrics, int],
    mode: str, concurrency: int,
) -> None:  # fmt: skip
    metrics, port = served
    ok = [client.publish(qname, {"n": i}) for i in range(OK_JOBS)]
    # Fail twice: the first attempt is retried (backoff 0), the second fails for good.
    failing = [
        client.publish(qname, {"fail": True}, max_attempts=2, backoff_ms=0)
        for _ in range(FAILING_JOBS)
    ]
    # A 300 ms lease and a 1.5 s handler: the reaper (ours) takes the lease away, so the
    # job is not acked (and with one attempt it fails for good, never to run again).
    slow = client.publish(qname, {"slow": True}, max_attempts=1, timeout_ms=300)
    # Beats far apart from the 300 ms lease stand for a starved heartbeat: the lease is
    # really lost (the consumer's default beats at a third of the lease would keep it).
    with running(client, qname, _handler(mode), concurrency=concurrency, observer=metrics,
                 heartbeat_interval_s=10.0) as run:  # fmt: skip
        wait_until(
            lambda: all(r.hget(f"{{{qname}}}:job:{j}", "state") == b"completed" for j in ok)
            and all(job_hash(r, qname, j)["state"] == "failed" for j in failing + [slow])
            and run.consumer.stats.lease_lost == 1,
            "every job to reach its end",
            timeout=30,
        )
        stats = run.stop()
    samples = scrape(port)
    count = {o: value(samples, "omniq_jobs_total", queue=qname, outcome=o) for o in OUTCOMES}
    assert count == {
        "completed": OK_JOBS, "failed": FAILING_JOBS, "retried": FAILING_JOBS,
        "lease_lost": 1, "released": 0,
    }  # fmt: skip
    assert stats.succeeded == count["completed"]
    assert stats.failed == count["failed"] + count["retried"]
    assert stats.lease_lost == count["lease_lost"]
    ran = OK_JOBS + 2 * FAILING_JOBS + 1
    assert value(samples, "omniq_job_duration_seconds_count", queue=qname) == ran
    # The slow handler alone took 1.5 s.
    assert 1.5 <= value(samples, "omniq_job_duration_seconds_sum", queue=qname) < 30
    # Pickup delay: first attempts only (the retries are left out).
    assert value(samples, "omniq_job_pickup_delay_seconds_count", queue=qname) == ran - FAILING_JOBS
    assert 0 <= value(samples, "omniq_job_pickup_delay_seconds_sum", queue=qname) < 60 * ran
    assert value(samples, "omniq_job_pickup_delay_seconds_bucket", queue=qname, le="+Inf") == (
        ran - FAILING_JOBS
    )
    assert value(samples, "omniq_jobs_in_flight", queue=qname) == 0
    assert value(samples, "omniq_worker_up") == 1
    metrics.close()
    assert metrics.registry.get_sample_value("omniq_worker_up") == 0


def test_in_flight_counts_running_handlers(
    client: Client, qname: str, served: tuple[WorkerMetrics, int]
) -> None:
    metrics, port = served
    for i in range(3):
        client.publish(qname, {"n": i})
    release = threading.Event()
    started: list[str] = []

    def handler(ctx: JobCtx) -> None:
        started.append(ctx.job_id)
        assert release.wait(20)

    with running(client, qname, handler, concurrency=3, observer=metrics) as run:
        wait_until(lambda: len(started) == 3, "three handlers running")
        assert value(scrape(port), "omniq_jobs_in_flight", queue=qname) == 3
        release.set()
        wait_until(lambda: run.consumer.stats.succeeded == 3, "three jobs acked")
        run.stop()
    samples = scrape(port)
    assert value(samples, "omniq_jobs_in_flight", queue=qname) == 0
    assert value(samples, "omniq_jobs_total", queue=qname, outcome="completed") == 3


def test_prefetched_jobs_given_back_at_stop_count_as_released(
    client: Client, r: redis.Redis, qname: str, served: tuple[WorkerMetrics, int]
) -> None:
    metrics, port = served
    total = 200
    client.publish_many(qname, [{"n": i} for i in range(total)])
    consumer: list[Consumer] = []

    def handler(ctx: JobCtx) -> None:
        if ctx.payload["n"] == 4:
            consumer[0].stop()  # the fifth job stops it: the prefetched rest go back

    # Deep prefetch, so most jobs are held unstarted when the consumer stops.
    with running(client, qname, handler, observer=metrics, prefetch=1000) as run:
        consumer.append(run.consumer)
        stats = run.join(20)
    samples = scrape(port)
    released = value(samples, "omniq_jobs_total", queue=qname, outcome="released")
    completed = value(samples, "omniq_jobs_total", queue=qname, outcome="completed")
    back = r.llen(f"{{{qname}}}:wait")
    assert completed == stats.succeeded == 5
    # How many were prefetched depends on the handler time seen (adaptive prefetch): every
    # one held is reported released, and every job not run is back in the wait lane.
    assert back == total - 5
    assert 0 < released <= back
    # Released jobs never started: they were never in flight and have no duration.
    assert value(samples, "omniq_jobs_in_flight", queue=qname) == 0
    assert value(samples, "omniq_job_duration_seconds_count", queue=qname) == 5


def test_a_raising_observer_does_not_break_the_consumer(
    client: Client, r: redis.Redis, qname: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def job_started(self, ctx: JobCtx) -> None:
            raise ValueError("observer bug")

        def job_finished(self, ctx: JobCtx, outcome: str, duration_s: Optional[float]) -> None:
            raise ValueError("observer bug")

    ids = [client.publish(qname, {"n": i}) for i in range(5)]
    with caplog.at_level(logging.ERROR, logger="omniq_fast.consumer"):
        with running(client, qname, lambda ctx: None, observer=Broken()) as run:
            wait_until(lambda: run.consumer.stats.succeeded == 5, "five jobs acked")
            run.stop()
    assert all(job_hash(r, qname, j)["state"] == "completed" for j in ids)
    errors = [rec for rec in caplog.records if "observer" in rec.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_pickup_delay_reads_the_ulid_time(client: Client, qname: str) -> None:
    from omniq_fast import _compat

    job_id = _compat.new_ulid()
    created = int(time.time() * 1000)

    def ctx(job_id: str, attempt: int = 1) -> JobCtx:
        return JobCtx(
            queue=qname, job_id=job_id, payload_raw="{}", payload={}, attempt=attempt,
            max_attempts=3, lock_until_ms=0, lease_token="t", exec=Exec(client, job_id),
        )  # fmt: skip

    delay = pickup_delay_s(ctx(job_id), created + 2500)
    assert delay is not None and 2.4 <= delay <= 2.6
    assert pickup_delay_s(ctx(job_id.lower()), created + 2500) == delay
    assert pickup_delay_s(ctx(job_id, attempt=2), created + 2500) is None  # a retry
    assert pickup_delay_s(ctx(job_id), created - 10_000) == 0.0  # producer's clock ahead
    assert pickup_delay_s(ctx(job_id), created - 3_600_000) is None  # not a creation time
    for chosen in ("order-17", "0" * 26, "8" + job_id[1:], "I" * 26, job_id[:-1] + "U"):
        assert pickup_delay_s(ctx(chosen), created) is None, chosen


# --------------------------------------------------------------------------- multiprocess

_CHILD = textwrap.dedent(
    """
    import sys
    from omniq_fast import Client, consume
    from omniq_fast.metrics import WorkerMetrics

    url, queue, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    metrics = WorkerMetrics()
    with Client(url) as client:
        consume(client, queue=queue, handler=lambda ctx: None, max_jobs=jobs,
                observer=metrics, poll_interval_s=0.01, stop_on_ctrl_c=False)
    print("done", flush=True)
    sys.stdin.read()  # stay alive (and counted up) until the test closes stdin
    """
)


def test_multiprocess_endpoint_sums_two_worker_processes(
    client: Client, qname: str, redis_url: str, core: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "")  # restored (unset) after the test
    path = prepare_multiprocess()
    assert os.environ[MULTIPROC_ENV] == path and os.path.isdir(path)
    per_worker = 30
    client.publish_many(qname, [{"n": i} for i in range(2 * per_worker)])
    env = dict(os.environ)
    env.pop("OMNIQ_FAST_NO_EXTENSIONS", None)
    if core.__name__.endswith("_core_py"):
        env["OMNIQ_FAST_NO_EXTENSIONS"] = "1"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, redis_url, qname, str(per_worker)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "done"
        port = free_ports(1)[0]
        serve_multiprocess_metrics(port, host="127.0.0.1")
        samples = scrape(port)
        completed = value(samples, "omniq_jobs_total", queue=qname, outcome="completed")
        assert completed == 2 * per_worker
        assert value(samples, "omniq_job_duration_seconds_count", queue=qname) == 2 * per_worker
        assert value(samples, "omniq_jobs_in_flight", queue=qname) == 0
        assert value(samples, "omniq_worker_up") == 2  # livesum: both processes are up
        # The files are per process: each child wrote its own.
        assert {f for f in os.listdir(path) if f.startswith("counter_")} == {
            f"counter_{child.pid}.db" for child in children
        }
        first, second = children
        assert first.stdin is not None
        first.stdin.close()
        assert first.wait(20) == 0
        mark_process_dead(first.pid)
        samples = scrape(port)
        assert value(samples, "omniq_worker_up") == 1  # the dead one left the sum
        completed = value(samples, "omniq_jobs_total", queue=qname, outcome="completed")
        assert completed == 2 * per_worker
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)


def test_the_guard_reports_what_a_refused_resent_ack_most_likely_did(client: Client) -> None:
    """Pure bookkeeping: an ack re-sent after a lost connection and refused is reported
    with the outcome the first (landed) one had, with the handler's time."""
    seen: list[tuple[str, str, Optional[float]]] = []

    class Recorder:
        def job_started(self, ctx: JobCtx) -> None:
            pass

        def job_finished(self, ctx: JobCtx, outcome: str, duration_s: Optional[float]) -> None:
            seen.append((ctx.job_id, outcome, duration_s))

    guard = ObserverGuard(Recorder())

    def ctx(job_id: str, attempt: int, max_attempts: int) -> JobCtx:
        return JobCtx(
            queue="q", job_id=job_id, payload_raw="{}", payload={}, attempt=attempt,
            max_attempts=max_attempts, lock_until_ms=0, lease_token="t",
            exec=Exec(client, job_id),
        )  # fmt: skip

    for job_id, attempt, max_attempts, op in [
        ("a", 1, 3, "ack_success"), ("b", 1, 3, "ack_fail"), ("c", 3, 3, "ack_fail"),
        ("d", 1, 0, "ack_fail"),  # max_attempts <= 0 counts as 1
    ]:  # fmt: skip
        job = ctx(job_id, attempt, max_attempts)
        guard.handled(job, 0.25)
        guard.unknown_outcome(job, op)
    guard.finished(ctx("e", 1, 1), "released")
    assert seen == [
        ("a", "completed", 0.25), ("b", "retried", 0.25), ("c", "failed", 0.25),
        ("d", "failed", 0.25), ("e", "released", None),
    ]  # fmt: skip
