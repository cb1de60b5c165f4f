"""Fixtures of the fault-injection suite: private servers and a fault proxy in front of them.

Every test here gets servers of its own (never the shared one), so it may kill, restart,
flush or starve them. Marked ``faults``; ``OMNIQ_FAST_FAULTS_SCALE`` (default 1) multiplies
the job counts and durations of the scenarios for a full-size run (CI runs the quick size).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy import FaultProxy  # noqa: E402
from servers import ServerProcess  # noqa: E402

#: Multiplies the size of every scenario (1 = the quick CI size).
SCALE = max(1, int(os.environ.get("OMNIQ_FAST_FAULTS_SCALE", "1")))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    """A private server (no persistence) on a free loopback port."""
    with ServerProcess() as srv:
        yield srv


@pytest.fixture
def aof_server() -> Iterator[ServerProcess]:
    """A private server with AOF (``appendfsync always``): a restart keeps acked writes."""
    with ServerProcess(aof=True) as srv:
        yield srv


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[FaultProxy]:
    """A fault proxy in front of ``server``; clients connect to ``proxy.url``."""
    with FaultProxy("127.0.0.1", server.port) as p:
        yield p
