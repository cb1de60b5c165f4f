"""The exporter on a Redis Cluster: queues on every master, found by the scan of every
master, each read from its own master; the gauges equal QueueMonitor's numbers."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest
from redis.cluster import RedisCluster

from conftest import name_on
from omniq_fast import Client, QueueMonitor
from support import delete_prefixed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "observability"))
from exporter_support import build_state, check_against_monitor, exporter_process  # noqa: E402
from metrics_support import scrape, value  # noqa: E402


@pytest.fixture
def client(redis_url: str, core: ModuleType) -> Iterator[Client]:
    with Client(redis_url, _core=core) as c:
        yield c


@pytest.fixture
def on_each_master(cluster: Any, qname: str, r: RedisCluster) -> Iterator[list[str]]:
    names = [name_on(cluster, m, qname) for m in cluster.masters()]
    yield names
    for name in names:
        delete_prefixed(r, "{" + name)  # type: ignore[arg-type]


def test_exporter_reads_queues_on_every_master(
    client: Client, redis_url: str, on_each_master: list[str]
) -> None:
    for i, queue in enumerate(on_each_master):
        build_state(client, queue, paused=i == 1)
    monitor = QueueMonitor(client)
    with exporter_process("--redis-url", redis_url) as (_, port):  # the scan of every master
        samples = scrape(port)
        for queue in on_each_master:
            check_against_monitor(samples, monitor, queue)
        assert [value(samples, "omniq_queue_paused", queue=q) for q in on_each_master] == [0, 1, 0]
    with exporter_process("--redis-url", redis_url, *on_each_master) as (_, port):
        samples = scrape(port)
        for queue in on_each_master:
            check_against_monitor(samples, monitor, queue)
        assert value(samples, "omniq_exporter_server_up") == 1
