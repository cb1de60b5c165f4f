"""The monitor reads the dashboard adds: lane sizes, activity samples, the paginated groups
listing (SCAN-based, each group once), a group's wait list and completion counters."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
import redis

from omniq_fast import Client, Job


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


def test_lane_sizes_and_activity(client: Client, qname: str, monitor_of: Any) -> None:
    monitor = monitor_of(client)
    client.publish(qname, {"n": 1})
    client.publish(qname, {"n": 2}, gid="g", group_limit=2)
    client.publish(qname, {"n": 3}, due_ms=int(time.time() * 1000) + 60_000)
    first = monitor.activity([qname])[0]
    assert (first.completed_since, first.failed_since, first.lease_seq) == (0, 0, 0)
    assert first.oldest_wait_ms > 0 and first.stats.waiting_total == 2
    marks = {qname: (first.completed_newest_ms, first.failed_newest_ms)}

    job = client.reserve(qname)
    client.ack_success(qname, job.job_id, job.lease_token)  # type: ignore[union-attr]
    job = client.reserve(qname)
    client.ack_fail(qname, job.job_id, job.lease_token, error="x")  # type: ignore[union-attr]
    sizes = monitor.lane_sizes(qname)
    assert sizes == {"wait": 0, "active": 0, "delayed": 2, "failed": 0, "completed": 1,
                     "gwait": 0}
    second = monitor.activity([qname], marks)[0]
    assert second.completed_since == 1 and second.lease_seq == 2
    assert second.failed_since == 0 and second.oldest_wait_ms == 0


def test_groups_page_lists_every_group_once(
    client: Client, qname: str, r: redis.Redis, monitor_of: Any
) -> None:
    # Groups with only a wait list, with wait + limit, and with only inflight + limit
    # (all jobs running): each appears exactly once over the whole walk.
    client.publish_many(qname, [Job({"i": i}, gid=f"g{i}", group_limit=2) for i in range(300)])
    client.publish(qname, {"x": 1}, gid="solo")
    running = client.reserve(qname)
    while running.gid.startswith("g"):  # type: ignore[union-attr]
        running = client.reserve(qname)
    monitor = monitor_of(client)
    seen: list[str] = []
    cursor, pages = "", 0
    while True:
        page = monitor.groups_page(qname, cursor, limit=40)
        assert len(page.groups) <= 40
        seen += [g.gid for g in page.groups]
        pages += 1
        cursor = page.cursor
        if not cursor:
            break
        assert pages < 100
    assert sorted(seen) == sorted({f"g{i}" for i in range(300)} | {"solo"})
    assert pages >= 8
    solo = monitor.group_status(qname, ["solo"])[0]
    assert (solo.inflight, solo.waiting_count, solo.ready) == (1, 0, False)


def test_group_wait_page_and_counter(client: Client, qname: str, monitor_of: Any) -> None:
    ids = [client.publish(qname, {"i": i}, gid="big", group_limit=1) for i in range(30)]
    monitor = monitor_of(client)
    page = monitor.group_wait_page(qname, "big", 5, 10)
    assert [j.job_id for j in page] == ids[5:15]
    assert all(j.gid == "big" and j.idx_score_ms > 0 for j in page)
    assert monitor.group_wait_page(qname, "nope") == []

    key = qname + "-fan"
    assert not monitor.counter(key).exists
    client.childs_init(key, 3)
    client.child_ack(key, "a")
    status = monitor.counter(key)
    assert (status.exists, status.remaining, status.done) == (True, 2, 1)
