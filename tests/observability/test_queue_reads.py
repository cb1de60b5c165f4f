"""The QueueMonitor reads the exporter needs beyond the official monitor's: the oldest
waiting job's age and how many leased jobs belong to groups, against a real server."""

from __future__ import annotations

from types import ModuleType
from typing import Iterator

import pytest
import redis

from omniq_fast import Client, QueueMonitor, ReservedJob

T0 = 1_700_000_000_000


@pytest.fixture
def client(redis_url: str, core: ModuleType) -> Iterator[Client]:
    with Client(redis_url, _core=core) as c:
        yield c


def test_oldest_waiting_age_follows_the_wait_lane(
    client: Client, r: redis.Redis, qname: str
) -> None:
    monitor = QueueMonitor(client)
    assert monitor.oldest_waiting_age_ms(qname, now_ms=T0) == 0  # no queue at all
    first = client.publish(qname, {"n": 1}, now_ms_override=T0)
    grouped = client.publish(qname, {"n": 2}, gid="g", now_ms_override=T0 + 200)
    last = client.publish(qname, {"n": 3}, now_ms_override=T0 + 500)
    client.publish(qname, {"n": 4}, due_ms=T0 + 5000, now_ms_override=T0 + 100)  # delayed
    assert monitor.oldest_waiting_age_ms(qname, now_ms=T0 + 2000) == 2000
    # Reserve takes the grouped lane first, then the ungrouped one (PROTOCOL.md §5):
    # the job published at +500 is then the oldest waiting.
    reserved = client.reserve_many(qname, 2, now_ms_override=T0 + 1000)
    assert isinstance(reserved, list)
    assert [job.job_id for job in reserved] == [grouped, first]
    assert monitor.oldest_waiting_age_ms(qname, now_ms=T0 + 2000) == 1500
    left = client.reserve(qname, now_ms_override=T0 + 1000)
    assert isinstance(left, ReservedJob) and left.job_id == last
    assert monitor.oldest_waiting_age_ms(qname, now_ms=T0 + 2000) == 0
    reserved.append(left)
    # The delayed job waits from when it was promoted, not from its publish.
    for job in reserved:
        client.ack_success(qname, job.job_id, job.lease_token, now_ms_override=T0 + 1100)
    assert client.promote_delayed(qname, now_ms_override=T0 + 6000) == 1
    assert monitor.oldest_waiting_age_ms(qname, now_ms=T0 + 9000) == 3000
    assert monitor.oldest_waiting_age_ms(qname, now_ms=T0) == 0  # never negative
    # Several queues at once, in the order given; this clock by default.
    ages = monitor.oldest_waiting_ages_ms([qname + "b", qname, qname + "b"], now_ms=T0 + 9000)
    assert ages == [0, 3000, 0]
    assert monitor.oldest_waiting_age_ms(qname) >= 3000


def test_grouped_active_counts_the_leased_jobs_that_have_a_group(
    client: Client, r: redis.Redis, qname: str
) -> None:
    monitor = QueueMonitor(client)
    other = qname + "b"
    assert monitor.grouped_active_many([qname, other]) == [0, 0]
    for i in range(3):
        client.publish(qname, {"g": i}, gid=f"g{i}")
    for i in range(2):
        client.publish(qname, {"u": i})
    client.publish(other, {"x": 1}, gid="g")
    reserved = client.reserve_many(qname, 4)
    assert isinstance(reserved, list) and len(reserved) == 4
    held = client.reserve(other)
    assert isinstance(held, ReservedJob)
    grouped = sum(1 for job in reserved if job.gid)
    assert 0 < grouped < 4
    # What Redis holds: active ids whose hash has a gid.
    active = [i.decode() for i in r.zrange(f"{{{qname}}}:active", 0, -1)]
    assert grouped == sum(r.hexists(f"{{{qname}}}:job:{i}", "gid") for i in active)
    assert monitor.grouped_active_many([qname, other, qname + "c"]) == [grouped, 1, 0]
    for job in reserved:
        client.ack_success(qname, job.job_id, job.lease_token)
    assert monitor.grouped_active_many([qname]) == [0]
