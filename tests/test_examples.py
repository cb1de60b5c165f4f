"""Every file of examples/ runs here against a real server, and its effect is checked.

The docs include these files verbatim (``--8<--``), so a page's example cannot rot without
this file failing. Each runs as a user runs it: a subprocess with ``REDIS_URL`` set (the
FastAPI app through starlette's TestClient), bounded in time. The queues they use are
their own names (``emails``, ``reports``...), on a server of this module's own.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import redis

from support import delete_prefixed

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
if not EXAMPLES.is_dir():  # the wheels' test runs copy tests/ alone
    pytest.skip("no examples/ beside tests/ (a copied test suite)", allow_module_level=True)

#: Every queue (and counter) an example touches: cleaned before and after each test.
QUEUES = ["demo", "emails", "imports", "reports", "albums", "thumbnails", "thumbs", "billing"]


@pytest.fixture(scope="module")
def redis_url(private_redis_url: str) -> str:
    """The examples use fixed queue names (``emails``, ``reports``...): they run on a server
    of this module's own, never on a shared one whose keys they did not make."""
    return private_redis_url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url, decode_responses=True)
    prefixes = [f"{{{q}}}" for q in QUEUES] + ["{cc:album:"]
    delete_prefixed(conn, *prefixes)
    yield conn
    delete_prefixed(conn, *prefixes)
    conn.close()


def _env(url: str) -> dict[str, str]:
    env = dict(os.environ, REDIS_URL=url, PYTHONUNBUFFERED="1")
    env.pop("COLUMNS", None)
    return env


def run_example(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=EXAMPLES, env=_env(url), capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


class Running:
    """A long-running example (a worker): read its output lines until enough have come,
    then SIGTERM it as a supervisor would, and return its exit status and output."""

    def __init__(self, url: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=EXAMPLES, env=_env(url), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, count: int, timeout: float = 30) -> None:
        found = 0
        while found < count:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"{count} lines matching {pattern!r} not seen: {self.seen}")
            self.seen.append(line)
            found += bool(re.search(pattern, line))

    def terminate(self, timeout: float = 30) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return status, "".join(self.seen)


def test_every_example_has_a_test() -> None:
    source = Path(__file__).read_text()
    untested = [p.name for p in EXAMPLES.glob("*.py") if f'"{p.name}"' not in source]
    assert not untested, f"examples without a test in {Path(__file__).name}: {untested}"


def test_quickstart_publish(redis_url: str, r: redis.Redis) -> None:
    proc = run_example(redis_url, "quickstart_publish.py")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split()[-1]
    assert r.hget(f"{{demo}}:job:{job_id}", "payload") == '{"hello":"world"}'
    assert r.lrange("{demo}:wait", 0, -1) == [job_id]


def test_quickstart_worker_consumes_until_sigterm(redis_url: str, r: redis.Redis) -> None:
    from omniq_fast import Client, QueueMonitor

    with Client(redis_url) as client:
        ids = client.publish_many("demo", [{"i": i} for i in range(3)])
    worker = Running(redis_url, "quickstart_worker.py")
    worker.wait_for(r"^got ", 3)
    status, out = worker.terminate()
    assert status == 0, out
    assert "handled=3, succeeded=3" in out
    with Client(redis_url) as client:
        assert QueueMonitor(client).stats("demo").completed_kept == len(ids) == 3


def test_cli_worker_module(redis_url: str, r: redis.Redis) -> None:
    """"tasks.py" run by ``omniq-fast worker MODULE:FUNCTION``."""
    from omniq_fast import Client

    emails = [{"to": f"user{i}@example.com"} for i in range(18)]
    emails += [{"to": "a@bounce.example"}, {"to": "b@bounce.example"}]
    with Client(redis_url) as client:
        client.publish_many("emails", emails, max_attempts=1)
    proc = run_example(
        redis_url, "-m", "omniq_fast", "worker", "tasks:send_email", "-q", "emails",
        "--concurrency", "4", "--burst",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    failed = [line for line in proc.stderr.splitlines() if "worker stopped" in line]
    assert failed and "handled=20 succeeded=18 failed=2" in failed[0], proc.stderr
    errors = [r.hget(f"{{emails}}:job:{i}", "last_error") for i in r.lrange("{emails}:failed", 0, -1)]
    assert len(errors) == 2 and all("mailbox unavailable" in (e or "") for e in errors), errors


def test_cli_worker_settings_object(redis_url: str, r: redis.Redis) -> None:
    from omniq_fast import Client

    with Client(redis_url) as client:
        client.publish_many("emails", [{"to": f"u{i}@example.com"} for i in range(5)])
    proc = run_example(redis_url, "-m", "omniq_fast", "worker", "tasks:settings", "--burst")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "worker starting" in proc.stdout and "worker stopping" in proc.stdout
    assert "handled=5 succeeded=5" in proc.stderr


def test_fastapi_app_publishes(redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    monkeypatch.setenv("REDIS_URL", redis_url)
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLES / "fastapi_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with TestClient(module.app) as http:
        replies = [http.post("/signup", params={"email": f"u{i}@example.com"}) for i in range(3)]
    assert [reply.status_code for reply in replies] == [200] * 3
    ids = [reply.json()["job_id"] for reply in replies]
    assert r.lrange("{emails}:wait", 0, -1) == ids
    assert r.hget(f"{{emails}}:job:{ids[0]}", "payload") == '{"to":"u0@example.com","subject":"Welcome"}'


def test_csv_import_is_idempotent(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "email"])
        writer.writerows([i, f"user{i}@example.com"] for i in range(4500))
    first = run_example(redis_url, "csv_import.py", str(path))
    assert first.returncode == 0, first.stderr
    assert "imported 4500 new jobs, 0 already queued" in first.stdout
    assert r.llen("{imports}:wait") == 4500
    assert r.hget("{imports}:job:user-7", "payload") == '{"id":"7","email":"user7@example.com"}'
    again = run_example(redis_url, "csv_import.py", str(path))
    assert again.returncode == 0, again.stderr
    assert "imported 0 new jobs, 4500 already queued" in again.stdout
    assert r.llen("{imports}:wait") == 4500


def test_fanout_runs_the_callback_once(redis_url: str, r: redis.Redis) -> None:
    proc = run_example(redis_url, "fanout.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("all 20 thumbnails done") == 1, proc.stdout
    assert r.llen("{thumbnails}:wait") == 0 and r.hget("{thumbnails}:job:x", "state") is None


def test_tenants_stay_within_their_limits(redis_url: str, r: redis.Redis) -> None:
    proc = run_example(redis_url, "tenants.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "handled 60 jobs" in proc.stdout
    for line in ("acme: at most 2", "globex: at most 1", "initech: at most"):
        assert line in proc.stdout, proc.stdout


def test_async_worker_consumes_until_sigterm(redis_url: str, r: redis.Redis) -> None:
    from omniq_fast import Client

    with Client(redis_url) as client:
        client.publish_many("emails", [{"to": f"u{i}@example.com"} for i in range(100)])
    worker = Running(redis_url, "async_worker.py")
    worker.wait_for(r"^sent ", 100)
    status, out = worker.terminate()
    assert status == 0, out
    assert "handled=100, succeeded=100" in out


@pytest.mark.cluster
def test_cluster_example(r: redis.Redis) -> None:
    from omniq_fast.testing import EmbeddedCluster, find_server_binary

    try:
        find_server_binary()
    except FileNotFoundError as exc:
        pytest.skip(f"no server binary for a cluster: {exc}")
    with EmbeddedCluster(masters=3) as cluster:
        proc = run_example(cluster.url, "cluster.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "'emails': 1000, 'thumbs': 1000, 'billing': 1000} cluster: True" in proc.stdout
    assert "consumed 3000 of 3000 jobs" in proc.stdout
