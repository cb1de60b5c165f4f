"""The demo, run as users run it: a subprocess whose exit status is the verdict."""

from __future__ import annotations

import subprocess
import sys


def test_demo_publishes_consumes_and_checks_every_job(redis_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "omniq_fast", "demo", "--jobs", "3000", "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "published 3000 jobs" in out
    assert "completed    2998" in out and "failed          2" in out
    assert "OK: every job reached the state it should" in out


def test_cli_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "omniq_fast", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("omniq-fast ")


def test_demo_refuses_a_bad_job_count() -> None:
    for bad in ("-5", "0"):
        proc = subprocess.run(
            [sys.executable, "-m", "omniq_fast", "demo", "--jobs", bad],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "--jobs must be >= 1" in proc.stderr and "OK" not in proc.stdout
