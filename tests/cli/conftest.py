"""Fixtures of the CLI tests: the installed ``omniq-fast`` command, run as a subprocess
with the test handlers (``cli_jobs``) on its PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from cli_support import omniq_fast_command
from omniq_fast import Client

HERE = Path(__file__).resolve().parent


@pytest.fixture
def cli_env(redis_url: str, qname: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(HERE),
            "CLI_TEST_QUEUE": qname, "COLUMNS": "160"}  # fmt: skip


@pytest.fixture
def run_cli(cli_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``omniq-fast ARGS...`` to its end (bounded), output captured as text."""

    def run(*args: str, input: str | None = None, timeout: float = 60, **env: str) -> Any:
        return subprocess.run([omniq_fast_command(), *args], env={**cli_env, **env},
                              input=input, capture_output=True, text=True, timeout=timeout)  # fmt: skip

    return run


@pytest.fixture
def start_cli(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start ``omniq-fast ARGS...`` in the background (stderr to a file); every process
    still running at the end of the test is killed."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        log = open(tmp_path / f"stderr-{len(procs)}.txt", "w+")
        proc = subprocess.Popen([omniq_fast_command(), *args], env=cli_env, text=True,
                                stdout=subprocess.PIPE, stderr=log)  # fmt: skip
        proc.stderr_file = log  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr_file.close()  # type: ignore[attr-defined]


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


