"""Helpers of the CLI tests (a module of its own: test modules cannot import a conftest)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis


def stderr_of(proc: Any) -> str:
    proc.stderr_file.flush()
    proc.stderr_file.seek(0)
    return proc.stderr_file.read()  # type: ignore[no-any-return]


def done_ids(r: redis.Redis, queue: str) -> set[str]:
    """Ids the test handlers recorded as done."""
    return {m.decode() for m in r.smembers("{" + queue + "}:test:done")}


def wait_exit(proc: Any, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"omniq-fast did not exit within {timeout}s:\n{stderr_of(proc)}")
        time.sleep(0.05)
    return proc.returncode  # type: ignore[no-any-return]


def omniq_fast_command() -> str:
    """The console script installed beside this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).parent / "omniq-fast"
    found = str(beside) if beside.exists() else shutil.which("omniq-fast")
    assert found, "the omniq-fast command is not installed"
    return found
