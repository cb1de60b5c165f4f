"""Queue state for the exporter tests, and the exporter run as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

from metrics_support import scrape, value
from omniq_fast import Client, QueueMonitor, ReservedJob
from omniq_fast.testing import free_ports

LANES = ("wait", "gwait", "active", "delayed", "failed", "completed")


def build_state(client: Client, queue: str, *, paused: bool) -> None:
    """A queue with every lane filled: 3 ungrouped and 3 grouped jobs waiting (groups g1,
    g2), 1 grouped and 1 ungrouped leased, 1 delayed, 1 failed, 2 completed."""
    for i in range(2):
        job_id = client.publish(queue, {"done": i})
        job = client.reserve(queue)
        assert isinstance(job, ReservedJob) and job.job_id == job_id
        client.ack_success(queue, job.job_id, job.lease_token)
    client.publish(queue, {"fail": 1}, max_attempts=1)
    job = client.reserve(queue)
    assert isinstance(job, ReservedJob)
    assert client.ack_fail(queue, job.job_id, job.lease_token, error="E: x") == ("FAILED", None)
    client.publish(queue, {"later": 1}, due_ms=int(time.time() * 1000) + 3_600_000)
    for gid in ("g1", "g1", "g2", "g2"):
        client.publish(queue, {"gid": gid}, gid=gid, group_limit=1)
    for i in range(4):
        client.publish(queue, {"u": i})
    # Two leases held: one grouped (reserve tries groups first), one ungrouped.
    held = client.reserve_many(queue, 2)
    assert isinstance(held, list) and sorted(bool(j.gid) for j in held) == [False, True]
    if paused:
        client.pause(queue)


def check_against_monitor(samples: dict[Any, float], monitor: QueueMonitor, queue: str) -> None:
    """Every queue gauge of ``queue`` equals what the monitor reads."""
    (st,) = monitor.stats_many([queue])
    lanes = dict(zip(LANES, (st.waiting, st.group_waiting, st.active, st.delayed, st.failed,
                             st.completed_kept)))  # fmt: skip
    assert {lane: value(samples, "omniq_queue_jobs", queue=queue, lane=lane) for lane in LANES} \
        == lanes  # fmt: skip
    assert value(samples, "omniq_queue_paused", queue=queue) == int(st.paused)
    assert value(samples, "omniq_queue_groups_ready", queue=queue) == st.groups_ready
    assert value(samples, "omniq_group_jobs", queue=queue, state="waiting") == st.group_waiting
    assert value(samples, "omniq_group_jobs", queue=queue, state="active") == (
        monitor.grouped_active_many([queue])[0]
    )
    age = value(samples, "omniq_queue_oldest_waiting_seconds", queue=queue)
    now_age = monitor.oldest_waiting_age_ms(queue) / 1000.0
    assert age is not None and 0 < age <= now_age  # read before this one


def exporter_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    return env


@contextmanager
def exporter_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``python -m omniq_fast.exporter ARGS --host 127.0.0.1 --port P``, up and answering."""
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq_fast.exporter", *args, "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=exporter_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                scrape(port)
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the exporter did not start"
                time.sleep(0.05)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
