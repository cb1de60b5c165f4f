"""The ``omniq-fast`` command on a Redis Cluster: queues on different masters are found,
published to, consumed, shown and listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from redis.cluster import RedisCluster

from conftest import name_on
from omniq_fast import Client, QueueMonitor

_HANDLER = "def handle(ctx):\n    if ctx.payload.get('fail'):\n        raise ValueError('no')\n"


def _cli(url: str, tmp_path: Path, *args: str, input: str | None = None) -> Any:
    command = Path(sys.executable).parent / "omniq-fast"
    env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([str(command), *args], env=env, input=input, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_cli_on_a_cluster(redis_url: str, r: RedisCluster, qname: str, tmp_path: Path,
                          cluster: Any) -> None:  # fmt: skip
    (tmp_path / "cluster_jobs.py").write_text(_HANDLER)
    masters = cluster.masters()
    # One queue per master, named after qname so its clean-up deletes them.
    names = [name_on(cluster, master, prefix=qname) for master in masters]
    for name in names:
        lines = '{"n": 1}\n{"fail": true}\n{"n": 2}\n'
        proc = _cli(redis_url, tmp_path, "publish", name, "-", "--max-attempts", "1",
                        input=lines)
        assert proc.returncode == 0, proc.stderr
    listed = json.loads(_cli(redis_url, tmp_path, "queues", "--json").stdout)
    assert set(names) <= {row["queue"] for row in listed}  # every master scanned
    args = ["worker", "cluster_jobs:handle", "--burst", "--log-level", "WARNING"]
    for name in names:
        args += ["-q", name]
    proc = _cli(redis_url, tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(_cli(redis_url, tmp_path, "stats", *names, "--json").stdout)
    with Client(redis_url) as client:
        expected = QueueMonitor(client).stats_many(names)
    assert [(row["completed_kept"], row["failed"]) for row in rows] == [(2, 1)] * 3
    assert [row["failed"] for row in rows] == [s.failed for s in expected]
    for name in names:
        failed = json.loads(_cli(redis_url, tmp_path, "peek", name, "failed", "--json").stdout)
        shown = _cli(redis_url, tmp_path, "job", name, failed[0]["job_id"]).stdout
        assert "ValueError: no" in shown and "Traceback" in shown
        retried = json.loads(_cli(redis_url, tmp_path, "retry-failed", name, "--all",
                                  "--json").stdout)  # fmt: skip
        assert retried["retried"] == [failed[0]["job_id"]]
