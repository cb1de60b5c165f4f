"""``omniq-fast worker``, run as a user runs it: a subprocess against a real server."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import redis

from cli_support import done_ids, stderr_of, wait_exit
from omniq_fast import Client, QueueMonitor
from support import job_hash, wait_until


def test_worker_drains_on_sigterm_nothing_lost(client: Client, r: redis.Redis, qname: str,
                                               start_cli) -> None:  # fmt: skip
    ids = client.publish_many(qname, [{"n": i, "sleep": 0.1} for i in range(30)])
    proc = start_cli("worker", "cli_jobs:record", "-q", qname, "--concurrency", "3")
    wait_until(lambda: len(done_ids(r, qname)) >= 3, "some jobs done", timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 143, stderr_of(proc)
    done = done_ids(r, qname)
    stats = QueueMonitor(client).stats(qname)
    # Every job that ran was acked; the others wait, none is left leased.
    assert stats.active == 0 and stats.completed_kept == len(done) < 30
    assert stats.waiting == 30 - len(done)
    assert int(r.get("{" + qname + "}:test:runs")) == len(done)
    assert "SIGTERM received" in stderr_of(proc)
    # Another worker takes the rest: every job ran exactly once.
    finisher = start_cli("worker", "cli_jobs:record", "-q", qname, "--burst", "--concurrency", "4")
    assert wait_exit(finisher) == 0, stderr_of(finisher)
    assert done_ids(r, qname) == set(ids) and int(r.get("{" + qname + "}:test:runs")) == 30


def test_sigint_exits_130_after_draining(client: Client, r: redis.Redis, qname: str,
                                         start_cli) -> None:  # fmt: skip
    job_id = client.publish(qname, {"sleep": 1.0})
    proc = start_cli("worker", "cli_jobs:record", "-q", qname)
    wait_until(lambda: QueueMonitor(client).stats(qname).active == 1, "the job running", 30)
    proc.send_signal(signal.SIGINT)
    assert wait_exit(proc) == 130, stderr_of(proc)
    assert done_ids(r, qname) == {job_id}  # the running job finished and was acked
    assert job_hash(r, qname, job_id)["state"] == "completed"


def test_burst_settings_object_async_hooks_several_queues(client: Client, r: redis.Redis,
                                                          qname: str, run_cli) -> None:  # fmt: skip
    other = qname + "b"
    ids = client.publish_many(qname, [{"sleep": 0.01}] * 20)
    ids += client.publish_many(other, [{"sleep": 0.01}] * 5)
    # The queues come from the settings object.
    proc = run_cli("worker", "cli_jobs:settings", "--burst", "--log-level", "WARNING")
    assert proc.returncode == 0, proc.stderr
    assert done_ids(r, qname) | done_ids(r, other) == set(ids)
    assert r.get("{" + qname + "}:test:started") == b"1"  # async on_startup ran
    assert r.get("{" + qname + "}:test:stopped") == b"1"  # sync on_shutdown ran
    assert proc.stderr == ""  # WARNING: no per-job lines


def test_burst_on_empty_queue_and_max_jobs(client: Client, r: redis.Redis, qname: str,
                                           run_cli) -> None:  # fmt: skip
    started = time.monotonic()
    assert run_cli("worker", "cli_jobs:record", "-q", qname, "--burst").returncode == 0
    assert time.monotonic() - started < 20
    client.publish_many(qname, [{}] * 5)
    proc = run_cli("worker", "cli_jobs:record", "-q", qname, "--max-jobs", "3")
    assert proc.returncode == 0, proc.stderr
    assert len(done_ids(r, qname)) == 3 and QueueMonitor(client).stats(qname).waiting == 2


def test_processes_restart_a_killed_child(client: Client, r: redis.Redis, qname: str,
                                          start_cli) -> None:  # fmt: skip
    ids = client.publish_many(qname, [{"sleep": 0.05}] * 60, timeout_ms=1500)
    proc = start_cli("worker", "cli_jobs:record", "-q", qname, "--processes", "2",
                     "--reap-interval-s", "0.2")  # fmt: skip

    def children() -> list[int]:
        path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    first = wait_until(lambda: len(children()) == 2 and children(), "two children", 30)
    wait_until(lambda: len(done_ids(r, qname)) >= 5, "some jobs done", 30)
    os.kill(first[0], signal.SIGKILL)
    wait_until(lambda: "was killed by SIGKILL" in stderr_of(proc), "the supervisor's line", 30)
    wait_until(lambda: len(children()) == 2 and first[0] not in children(), "a new child", 30)
    # The killed child's leased jobs come back when their leases expire.
    wait_until(lambda: done_ids(r, qname) == set(ids), "every job done", 60)
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 143, stderr_of(proc)
    assert QueueMonitor(client).stats(qname).active == 0


def test_json_logs_carry_job_fields_and_truncate_payloads(client: Client, qname: str,
                                                          run_cli) -> None:  # fmt: skip
    big = client.publish(qname, {"text": "é" * 1000})
    proc = run_cli("worker", "cli_jobs:record", "-q", qname, "--burst", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    finished = [rec for rec in records if rec.get("outcome") == "completed"]
    assert len(finished) == 1
    rec = finished[0]
    assert rec["queue"] == qname and rec["job_id"] == big and rec["attempt"] == 1
    assert rec["level"] == "INFO" and isinstance(rec["duration_ms"], float)
    received = next(rec["message"] for rec in records if "received" in rec["message"])
    size = len(json.dumps({"text": "é" * 1000}, ensure_ascii=False, separators=(",", ":")).encode())
    assert received.endswith(f"… ({size} bytes)") and len(received) < 400


def test_tracebacks_stored_and_shown_by_job(client: Client, r: redis.Redis, qname: str,
                                            run_cli) -> None:  # fmt: skip
    job_id = client.publish(qname, {"n": 7}, max_attempts=1)
    short = client.publish(qname + "b", {"n": 8}, max_attempts=1)
    assert run_cli("worker", "cli_jobs:explode", "-q", qname, "--burst").returncode == 0
    assert run_cli("worker", "cli_jobs:explode", "-q", qname + "b", "--burst",
                   "--no-tracebacks").returncode == 0  # fmt: skip
    error = job_hash(r, qname, job_id)["last_error"]
    lines = error.splitlines()
    assert lines[0] == "ValueError: bad input 7"  # the official SDK's line first
    assert lines[1] == "Traceback (most recent call last):" and "in inner" in error
    assert "cli_jobs.py" in lines[2] and "omniq_fast" not in error  # from the user's code on
    assert job_hash(r, qname + "b", short)["last_error"] == "ValueError: bad input 8"
    shown = run_cli("job", qname, job_id)
    assert shown.returncode == 0, shown.stderr
    assert "failed" in shown.stdout and "ValueError: bad input 7" in shown.stdout
    assert "Traceback (most recent call last):" in shown.stdout and '"n": 7' in shown.stdout
    as_json = json.loads(run_cli("job", qname, job_id, "--json").stdout)
    assert as_json["last_error"] == error and as_json["state"] == "failed"
