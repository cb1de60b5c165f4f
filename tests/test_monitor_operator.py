"""The monitor's reads for operators, beyond the official monitor's: the oldest waiting
job, every group of a queue, many jobs at once."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import redis

from omniq_fast import Client
from support import connect, job_hash


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


def test_oldest_waiting_ms(client: Client, r: redis.Redis, qname: str, monitor_of: Any) -> None:
    monitor = monitor_of(client)
    other = qname + "b"
    assert monitor.oldest_waiting_ms([qname, other]) == [None, None]
    first = client.publish(qname, {"n": 1}, now_ms_override=1_000_000)
    client.publish(qname, {"n": 2}, gid="g", now_ms_override=1_000_500)
    client.publish(other, {"n": 3}, gid="g", now_ms_override=2_000_000)
    assert monitor.oldest_waiting_ms([qname, other, qname]) == [1_000_000, 2_000_000, 1_000_000]
    assert int(job_hash(r, qname, first)["queued_ms"]) == 1_000_000
    client.reserve(qname, now_ms_override=1_000_600)  # hands out one of the two
    assert monitor.oldest_waiting_ms([qname])[0] in (1_000_000, 1_000_500)


def test_scan_groups_and_get_jobs(
    client: Client, qname: str, redis_url: str, monitor_of: Any
) -> None:
    monitor = monitor_of(connect(redis_url))
    assert monitor.scan_groups(qname) == []
    ids = client.publish_many(qname, [{"n": i} for i in range(3)], gid="a:1", group_limit=2)
    client.publish(qname, {"n": 9}, gid="b")
    client.publish(qname + "b", {"n": 9}, gid="other-queue")
    assert monitor.scan_groups(qname) == ["a:1", "b"]
    job = client.reserve(qname)
    assert job is not None
    # A group whose list emptied still has its in-flight count and limit keys.
    assert monitor.scan_groups(qname) == ["a:1", "b"]
    infos = monitor.get_jobs(qname, [ids[0], "missing", "", ids[2]])
    assert [i.job_id if i else None for i in infos] == [ids[0], None, None, ids[2]]
    assert infos[0] == monitor.get_job(qname, ids[0])
    assert monitor.get_jobs(qname, []) == []
