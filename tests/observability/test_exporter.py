"""The exporter run as a user runs it (``python -m omniq_fast.exporter``), scraped over HTTP
and parsed with prometheus_client's parser: its gauges equal QueueMonitor's numbers."""

from __future__ import annotations

import signal
import subprocess
import sys
from types import ModuleType
from typing import Iterator

import pytest
import redis
from prometheus_client import CollectorRegistry

from exporter_support import build_state, check_against_monitor, exporter_env, exporter_process
from metrics_support import scrape, value
from omniq_fast import Client, QueueMonitor
from omniq_fast.testing import free_ports
from omniq_fast.exporter import QueueCollector


@pytest.fixture
def client(redis_url: str, core: ModuleType) -> Iterator[Client]:
    with Client(redis_url, _core=core) as c:
        yield c


def test_named_queues_export_what_the_monitor_reads(
    client: Client, redis_url: str, qname: str
) -> None:
    build_state(client, qname, paused=True)
    build_state(client, qname + "b", paused=False)
    empty = qname + "c"  # named but never used: all zero
    with exporter_process("--redis-url", redis_url, qname, qname + "b", empty) as (proc, port):
        samples = scrape(port)
        monitor = QueueMonitor(client)
        check_against_monitor(samples, monitor, qname)
        check_against_monitor(samples, monitor, qname + "b")
        assert value(samples, "omniq_queue_paused", queue=qname) == 1
        assert value(samples, "omniq_queue_paused", queue=qname + "b") == 0
        assert value(samples, "omniq_queue_jobs", queue=qname, lane="gwait") == 3
        assert value(samples, "omniq_group_jobs", queue=qname, state="active") == 1
        assert value(samples, "omniq_queue_jobs", queue=empty, lane="wait") == 0
        assert value(samples, "omniq_queue_oldest_waiting_seconds", queue=empty) == 0
        assert value(samples, "omniq_exporter_server_up") == 1
        # Read again at each scrape: a resumed queue shows at once.
        client.resume(qname)
        assert value(scrape(port), "omniq_queue_paused", queue=qname) == 0
        queues = {dict(labels)["queue"] for name, labels in samples if name == "omniq_queue_paused"}
        assert queues == {qname, qname + "b", empty}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130


def test_without_queues_every_queue_is_found_at_each_scrape(
    client: Client, redis_url: str, qname: str
) -> None:
    build_state(client, qname, paused=False)
    with exporter_process("--redis-url", redis_url) as (proc, port):
        check_against_monitor(scrape(port), QueueMonitor(client), qname)
        later = qname + "later"  # a queue made after the exporter started
        client.publish(later, {"x": 1})
        assert value(scrape(port), "omniq_queue_jobs", queue=later, lane="wait") == 1


def test_redis_url_comes_from_the_environment(client: Client, redis_url: str, qname: str) -> None:
    client.publish(qname, {"x": 1})
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq_fast.exporter", qname, "--host", "127.0.0.1",
         "--port", str(port)],
        env={**exporter_env(), "REDIS_URL": redis_url}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.strip() == f"omniq-fast exporter: 1 queue on http://127.0.0.1:{port}/metrics"
        assert value(scrape(port), "omniq_queue_jobs", queue=qname, lane="wait") == 1
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        proc.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "args, message",
    [
        (["bad:name"], "invalid queue name 'bad:name'"),
        (["--redis-url", "redis://127.0.0.1:{closed}/0"], "cannot read redis://127.0.0.1:"),
    ],
    ids=["invalid-queue", "unreachable"],
)
def test_startup_errors_are_one_clear_line(args: list[str], message: str) -> None:
    closed = free_ports(1)[0]
    args = [a.format(closed=closed) for a in args]
    if args and args[0] == "bad:name":
        args = ["--redis-url", f"redis://127.0.0.1:{closed}/0", *args]
    done = subprocess.run(
        [sys.executable, "-m", "omniq_fast.exporter", *args], env=exporter_env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode in (1, 2) and done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_reports_down_not_an_error() -> None:
    closed = free_ports(1)[0]
    down = redis.Redis.from_url(f"redis://127.0.0.1:{closed}/0", socket_connect_timeout=2)
    with down:
        registry = CollectorRegistry()
        registry.register(QueueCollector(QueueMonitor(down), ["q1"]))
        assert registry.get_sample_value("omniq_exporter_server_up") == 0
        assert registry.get_sample_value("omniq_queue_paused", {"queue": "q1"}) is None
        assert registry.get_sample_value("omniq_exporter_scrape_duration_seconds") is not None
