"""Operator commands of ``omniq-fast``, run as subprocesses against a real server."""

from __future__ import annotations

import json
import signal
import socket
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import redis

from omniq_fast import Client, QueueMonitor
from support import job_hash


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]


def _fail_and_wait(client: Client, queue: str, n: int) -> list[str]:
    """``n`` jobs failed for good (by a consumer whose handler raises)."""
    ids = client.publish_many(queue, [{"n": i} for i in range(n)], max_attempts=1)

    def boom(ctx: object) -> None:
        raise RuntimeError("no")

    client.consume(queue, boom, max_jobs=n, poll_interval_s=0.01)
    return ids


def test_stats_json_equals_the_monitor(client: Client, qname: str, run_cli) -> None:
    client.publish_many(qname, [{"n": i} for i in range(7)])
    client.publish_many(qname, [{"g": i} for i in range(4)], gid="g1", group_limit=2)
    client.publish(qname, {"later": 1}, due_ms=client.redis.time()[0] * 1000 + 600_000)
    other = qname + "b"
    _fail_and_wait(client, other, 3)
    client.pause(other)
    proc = run_cli("stats", qname, other, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    monitor = QueueMonitor(client)
    expected = monitor.stats_many([qname, other])
    oldest = monitor.oldest_waiting_ms([qname, other])
    for row, stats, first in zip(rows, expected, oldest):
        age = row.pop("oldest_waiting_age_s")
        assert row == {**asdict(stats), "oldest_waiting_ms": first}
        assert (age is None) == (first is None)
    assert rows[0]["waiting"] == 7 and rows[0]["group_waiting"] == 4 and rows[0]["delayed"] == 1
    assert rows[1]["paused"] is True and rows[1]["failed"] == 3
    assert rows[0]["oldest_waiting_ms"] > 0 and rows[1]["oldest_waiting_ms"] is None
    listed = json.loads(run_cli("queues", "--json").stdout)
    assert {qname, other} <= {row["queue"] for row in listed}
    table = run_cli("stats", qname, other).stdout
    assert qname in table and "paused" in table and "oldest" in table


def test_publish_json_lines(client: Client, qname: str, run_cli, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    lines = [json.dumps({"n": i, "text": "é"}) for i in range(1200)]
    path.write_text("\n".join(lines[:600] + [""] + lines[600:]) + "\n", encoding="utf-8")
    proc = run_cli("publish", qname, str(path), "--max-attempts", "5")
    assert proc.returncode == 0, proc.stderr
    assert f"published 1200 jobs to {qname}" in proc.stdout
    monitor = QueueMonitor(client)
    assert monitor.stats(qname).waiting == 1200
    first = monitor.lane_page(qname, "wait", limit=1)[0]
    assert json.loads(monitor.get_job(qname, first.job_id).payload) == {"n": 0, "text": "é"}
    assert first.max_attempts == 5
    # From stdin too, as JSON for scripts, delayed.
    proc = run_cli("publish", qname + "b", "-", "--json", "--delay-ms", "60000",
                   input='[1,2]\n{"a": 1}\n')  # fmt: skip
    assert json.loads(proc.stdout)["published"] == 2
    assert monitor.stats(qname + "b").delayed == 2


def test_stats_watch_json_prints_a_line_per_update(client: Client, qname: str,
                                                   start_cli) -> None:  # fmt: skip
    client.publish(qname, {"n": 1})
    proc = start_cli("stats", qname, "--watch", "--json", "--interval", "0.1")
    first = json.loads(proc.stdout.readline())
    client.publish(qname, {"n": 2})
    deadline = time.monotonic() + 30
    while (row := json.loads(proc.stdout.readline())[0])["waiting"] != 2:
        assert time.monotonic() < deadline
    assert first[0]["queue"] == qname and first[0]["waiting"] == 1 and row["queue"] == qname
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


def test_publish_with_bad_lines_writes_nothing(client: Client, qname: str, run_cli) -> None:
    text = '{"ok": 1}\n{"ok": 2}\nnot json\n{"ok": 3}\n"a string"\n{"x": NaN}\n'
    proc = run_cli("publish", qname, "-", input=text)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[:3] == [
        line for line in proc.stderr.splitlines() if line.startswith("line ")
    ]
    assert [line.split(":")[0] for line in proc.stderr.splitlines()[:3]] == [
        "line 3", "line 5", "line 6",
    ]
    assert "3 bad lines: nothing was published" in proc.stderr
    assert QueueMonitor(client).stats(qname).waiting_total == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["worker", "no_such_module:handle", "-q", "{q}"], "cannot import 'no_such_module'"),
        (["worker", "cli_jobs", "-q", "{q}"], "expected MODULE:FUNCTION"),
        (["worker", "cli_jobs:nothing", "-q", "{q}"], "has no attribute 'nothing'"),
        (["worker", "cli_jobs:record", "-q", "bad name"], "invalid queue name 'bad name'"),
        (["worker", "cli_jobs:record"], "no queue"),
        (["worker", "cli_jobs:record", "-q", "{q}", "--redis-url", "redis://127.0.0.1:{port}/0"],
         "cannot reach the server at redis://127.0.0.1:{port}/0"),
        (["stats", "--redis-url", "redis://:secret@127.0.0.1:{port}/0"],
         "cannot reach the server at redis://:***@127.0.0.1:{port}/0"),
        (["stats", "a:b"], "invalid queue name 'a:b'"),
        (["job", "{q}", "NOPE"], "no job 'NOPE'"),
    ],
    ids=["no-module", "no-colon", "no-attribute", "bad-queue", "no-queue", "unreachable",
         "unreachable-password", "stats-bad-queue", "no-job"],
)
def test_errors_are_one_clear_line(qname: str, run_cli, args: list[str], message: str) -> None:
    port = str(_closed_port())
    proc = run_cli(*[a.replace("{q}", qname).replace("{port}", port) for a in args])
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert message.replace("{port}", port) in lines[0]
    assert "Traceback" not in proc.stderr and "secret" not in proc.stderr


def test_pause_resume_retry_remove_peek_groups(client: Client, r: redis.Redis, qname: str,
                                               run_cli) -> None:  # fmt: skip
    assert run_cli("pause", qname).stdout == f"paused {qname}\n"
    assert client.is_paused(qname)
    assert json.loads(run_cli("resume", qname, "--json").stdout) == {
        "queue": qname, "paused": False, "was_paused": True,
    }  # fmt: skip
    failed = _fail_and_wait(client, qname, 30)
    one = run_cli("retry-failed", qname, failed[0], "NOPE")
    assert one.returncode == 1 and one.stdout == f"retried 1 job of {qname}\n"
    assert "NOPE: NO_JOB" in one.stderr
    rest = json.loads(run_cli("retry-failed", qname, "--all", "--json").stdout)
    assert sorted(rest["retried"]) == sorted(failed[1:]) and rest["refused"] == []
    assert QueueMonitor(client).stats(qname).waiting == 30
    assert run_cli("retry-failed", qname).returncode == 2  # ids or --all: a usage error
    peek = json.loads(run_cli("peek", qname, "wait", "--limit", "40", "--json").stdout)
    assert len(peek) == 30 and {json.loads(j["payload"])["n"] for j in peek} == set(range(30))
    assert failed[5] in run_cli("peek", qname, "wait", "--limit", "30").stdout
    removed = run_cli("remove", qname, "wait", failed[0], failed[1], "--json")
    assert json.loads(removed.stdout)["removed"] == failed[:2]
    assert not r.exists("{" + qname + "}:job:" + failed[0])
    client.publish_many(qname, [{}] * 3, gid="tenant-a", group_limit=2)
    client.publish(qname, {}, gid="tenant-b")
    groups = json.loads(run_cli("groups", qname, "--json").stdout)
    assert groups == [
        {"gid": "tenant-a", "inflight": 0, "limit": 2, "ready": True, "waiting_count": 3},
        {"gid": "tenant-b", "inflight": 0, "limit": 1, "ready": True, "waiting_count": 1},
    ]
    assert "tenant-a" in run_cli("groups", qname).stdout
    assert job_hash(r, qname, failed[2])["state"] == "wait"


def test_bench_publishes_and_consumes(run_cli) -> None:
    proc = run_cli("bench", "--jobs", "500", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["succeeded"] == 500 and result["consume_jobs_per_s"] > 0
    assert result["publish_jobs_per_s"] > 0
