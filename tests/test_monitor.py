"""``omniq_fast.monitor.QueueMonitor`` answers exactly what the official monitor answers.

Both monitors read the same database: state is built with the official client (and, for
edge cases, raw Redis writes), then every method is called on both with many argument
combinations and the results are compared field by field. Ours runs over a bytes, a str
(``decode_responses=True``) and a RESP3 connection. The one known difference (a payload
that is not UTF-8, which no client can write) has its own test.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import SimpleNamespace
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis

from omniq_fast.errors import InvalidQueueName
from omniq_fast.monitor import (
    GroupReady,
    GroupStatus,
    JobInfo,
    LaneJob,
    QueueMonitor,
    QueueOverview,
    QueueStats,
)
from omniq_fast.aio.monitor import AsyncQueueMonitor
from support import BlockingView, tagged

official_client_mod = pytest.importorskip("omniq.client")
official_monitor_mod = pytest.importorskip("omniq.monitor")
official_models = pytest.importorskip("omniq.monitor_models")

T0 = 1_700_000_000_000
LANES = ("wait", "active", "delayed", "failed", "completed")
MODELS = (QueueStats, GroupReady, GroupStatus, JobInfo, LaneJob, QueueOverview)


@pytest.fixture
def official_client(redis_url: str) -> Iterator[Any]:
    """The official client on the same database as ``r`` (a black box)."""
    parts = urlsplit(redis_url)
    path = parts.path.strip("/")
    client = official_client_mod.OmniqClient(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(path) if path else 0,
        username=parts.username,
        password=parts.password,
        ssl=parts.scheme == "rediss",
    )
    yield client
    client.close()


@pytest.fixture
def official(official_client: Any) -> Any:
    return official_monitor_mod.QueueMonitor(official_client)


@pytest.fixture(
    params=[{}, {"decode_responses": True}, {"protocol": 3}], ids=["bytes", "str", "resp3"]
)
def ours(
    request: pytest.FixtureRequest, redis_url: str, monitor_of: Callable[[Any], QueueMonitor]
) -> Iterator[QueueMonitor]:
    """Ours on each connection kind, on both shells (``monitor_of``: sync and async)."""
    conn = redis.Redis.from_url(redis_url, **request.param)
    yield monitor_of(conn)
    conn.close()


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", tagged(call()))
    except ValueError:
        return ("raises", ValueError)
    except TypeError:
        return ("raises", TypeError)


class Once(list):  # type: ignore[type-arg]
    """An argument passed to each monitor as a fresh one-shot iterator over these items."""


def same(ours: QueueMonitor, official: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``method`` on both monitors; the results (or error kinds) must be equal."""

    def call(monitor: Any) -> Any:
        fresh = [iter(a) if isinstance(a, Once) else a for a in args]
        return outcome(lambda: getattr(monitor, method)(*fresh, **kwargs))

    want = call(official)
    got = call(ours)
    assert got == want, f"{method}{args}{kwargs}"
    return got[1]


def build_rich_queue(c: Any, r: redis.Redis, q: str) -> None:
    """Jobs in every lane: waiting (plain and grouped), active, delayed (future due and
    retry backoff), promoted retries, failed with an error, completed; groups with and
    without limits, some in flight."""
    for i in range(8):
        c.publish(queue=q, payload={"i": i}, job_id=f"w{i}", max_attempts=1 + 2 * (i % 2),
                  now_ms_override=T0 + i)
    for i in range(4):
        c.publish(queue=q, payload={"a": i}, job_id=f"a{i}", gid="gA", group_limit=2,
                  max_attempts=1 + (i % 2), now_ms_override=T0 + 10 + i)
    for i in range(3):
        c.publish(queue=q, payload={"b": [i, "é"]}, job_id=f"b{i}", gid="gB",
                  now_ms_override=T0 + 20 + i)
    c.publish(queue=q, payload=["c"], job_id="c0", gid="gC", group_limit=3, now_ms_override=T0 + 30)
    c.publish(queue=q, payload={"d": 0}, job_id="d0", due_ms=T0 + 10**9, now_ms_override=T0 + 40)
    c.publish(queue=q, payload={"d": 1}, job_id="d1", gid="gB", due_ms=T0 + 10**9 + 5,
              now_ms_override=T0 + 41)
    for k in range(12):
        now = T0 + 100 + k
        job = c.reserve(queue=q, now_ms_override=now)
        assert job is not None and job.status == "JOB"
        if k % 4 in (0, 3):
            c.ack_success(queue=q, job_id=job.job_id, lease_token=job.lease_token,
                          now_ms_override=now)
        elif k % 4 == 1:
            c.ack_fail(queue=q, job_id=job.job_id, lease_token=job.lease_token,
                       error=f"boom {k}: ünïcode", now_ms_override=now)
    # Retries whose backoff is over go back to waiting, with their attempt and error.
    c.promote_delayed(queue=q, now_ms_override=T0 + 100 + 5000 + 2)
    for i in range(3):  # ready groups after the reserves drained the first ones
        c.publish(queue=q, payload={"e": i}, job_id=f"e{i}", gid=f"g{'CDE'[i]}",
                  group_limit=2, now_ms_override=T0 + 6000 + i)
    base = "{" + q + "}"
    for lane in LANES:
        assert r.zcard(f"{base}:idx:{lane}") > 0, lane
    assert r.zcard(base + ":groups:ready") > 0
    assert any(int(r.get(f"{base}:g:g{g}:inflight") or 0) > 0 for g in "ABC")
    assert r.llen(base + ":failed") > 0 and r.llen(base + ":completed") > 0


def all_job_ids(r: redis.Redis, q: str) -> list[str]:
    base = "{" + q + "}"
    ids = set()
    for lane in LANES:
        ids.update(m.decode() for m in r.zrange(f"{base}:idx:{lane}", 0, -1))
    return sorted(ids)


# ---------------------------------------------------------------------------- API shape


def test_models_have_the_official_names_and_fields() -> None:
    for model in MODELS:
        theirs = getattr(official_models, model.__name__)
        assert [f.name for f in dataclasses.fields(model)] == [
            f.name for f in dataclasses.fields(theirs)
        ]
        assert model.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_methods_have_the_official_signatures() -> None:
    theirs = official_monitor_mod.QueueMonitor
    names = [n for n in vars(theirs) if not n.startswith("_")]
    assert names
    for name in names:
        want = inspect.signature(getattr(theirs, name)).parameters
        got = inspect.signature(getattr(QueueMonitor, name)).parameters
        assert [(p.name, p.default, p.kind) for p in got.values()] == [
            (p.name, p.default, p.kind) for p in want.values()
        ], name


def test_accepts_a_redis_or_anything_with_a_redis_attribute(r: redis.Redis, qname: str) -> None:
    from omniq_fast import Client

    r.hset("{" + qname + "}:stats", "active", "2")
    with Client(redis=r) as client:
        assert QueueMonitor(client).stats(qname).active == 2
    assert QueueMonitor(SimpleNamespace(redis=r)).stats(qname).active == 2  # type: ignore[arg-type]
    assert QueueMonitor(r).stats(qname).active == 2


# ---------------------------------------------------------------------------- parity


def test_rich_queue(
    ours: QueueMonitor, official: Any, official_client: Any, r: redis.Redis, qname: str
) -> None:
    q = qname
    build_rich_queue(official_client, r, q)
    ids = all_job_ids(r, q)
    same(ours, official, "stats", q)
    same(ours, official, "stats_many", [q, q + "none", q])
    same(ours, official, "stats_many", q)
    same(ours, official, "stats_many", [])
    same(ours, official, "stats_many", Once([q, q + "x"]))
    for offset in (0, 1, 2, 5, -3):
        for limit in (0, 1, 2, 200, 501, -1):
            same(ours, official, "groups_ready", q, offset, limit)
            same(ours, official, "groups_ready_with_scores", q, offset=offset, limit=limit)
    same(ours, official, "groups_ready", q)
    same(ours, official, "groups_ready_with_scores", q)
    gids = ["gA", "gB", "gC", "nogroup", "", "gA", " gA"]
    for default_limit in (1, 0, -2, 3, "2", 2.7):
        same(ours, official, "group_status", q, gids, default_limit=default_limit)
    same(ours, official, "group_status", q, gids)
    same(ours, official, "group_status", q, [])
    same(ours, official, "group_status", q, "gA")
    same(ours, official, "group_status", q, ("gB", "gC"))
    for lane in LANES:
        for offset in (0, 1, 3, -2, 100):
            for limit in (0, 1, 2, 25, 26, 100, -5):
                for reverse in (False, True):
                    same(ours, official, "lane_page", q, lane, offset, limit, reverse)
        same(ours, official, "lane_page", q, lane)
        same(ours, official, "lane_page", q, lane, reverse=True)
        same(ours, official, "find_jobs", q, lane, ids)
        same(ours, official, "find_jobs", q, lane, ids[::-1] + ["nope", "", ids[0]])
        same(ours, official, "find_jobs", q, lane, Once(ids[:3]))
    same(ours, official, "find_jobs", q, "wait", [])
    same(ours, official, "lane_page", q, "bogus")
    same(ours, official, "find_jobs", q, "bogus", ids)
    same(ours, official, "lane_page", q, "wait", "1", 2.9)
    for job_id in ids + ["nope", ""]:
        same(ours, official, "get_job", q, job_id)
    for samples in (0, 1, 2, 10, 25, 30, -1, 2.5):
        same(ours, official, "overview", q, samples)
    same(ours, official, "overview", q)


def test_paused_queue(
    ours: QueueMonitor, official: Any, official_client: Any, r: redis.Redis, qname: str
) -> None:
    official_client.publish(queue=qname, payload={"x": 1}, job_id="p1", gid="g",
                            now_ms_override=T0)
    official_client.pause(queue=qname)
    stats = same(ours, official, "stats", qname)
    assert stats[1]["paused"] is True
    same(ours, official, "overview", qname)
    same(ours, official, "group_status", qname, ["g"])
    official_client.resume(queue=qname)
    assert same(ours, official, "stats", qname)[1]["paused"] is False


def test_unknown_queue(ours: QueueMonitor, official: Any, qname: str) -> None:
    q = qname + "none"
    assert same(ours, official, "stats", q)[1]["waiting"] == 0
    same(ours, official, "stats_many", [q])
    assert same(ours, official, "groups_ready", q) == []
    same(ours, official, "groups_ready_with_scores", q)
    same(ours, official, "group_status", q, ["g", "h"], 4)
    for lane in LANES:
        assert same(ours, official, "lane_page", q, lane, 0, 25, True) == []
        assert same(ours, official, "find_jobs", q, lane, ["x", "y"]) == []
    assert same(ours, official, "get_job", q, "x") is None
    same(ours, official, "overview", q, 3)


def test_scan_queues(
    ours: QueueMonitor, official: Any, official_client: Any, r: redis.Redis, qname: str
) -> None:
    for suffix in ("b", "a", ".c", "_d", "-E", "0"):
        official_client.publish(queue=qname + suffix, payload={}, now_ms_override=T0)
    # A stats hash is what makes a queue visible, whoever wrote it.
    r.hset("{" + qname + "z}:stats", "waiting", "1")
    r.rpush("{" + qname + "nostats}:wait", "x")  # no stats hash: not a queue
    r.set("{" + qname + "str}:stats", "1")  # not a hash: skipped
    r.hset("{" + qname + "y}:job:1:stats", "a", "1")  # not a queue's stats key
    r.hset("{" + qname + "bad name}:stats", "a", "1")  # not a valid queue name
    r.hset("{" + qname + "b}}:stats", "a", "1")
    # Keys outside the "{qname" prefix the fixture cleans up: deleted here.
    odd = [
        "{{" + qname + "b}:stats",  # braces must pair up
        qname + "plain:stats",  # no braces: still counts as a queue
        " {" + qname + "spaced} :stats",  # whitespace around the braces is dropped
        "\t" + qname + "tab\t:stats",
        qname + "a:stats",  # the same queue as "{qname a}:stats": listed once
        "{ " + qname + "inner}:stats",  # whitespace inside the braces: invalid
    ]
    try:
        for key in odd:
            r.hset(key, "waiting", "1")
        want = [q for q in official.scan_queues() if q.startswith(qname)]
        got = [q for q in ours.scan_queues() if q.startswith(qname)]
        assert got == want
        assert got == sorted(set(got))
        assert qname + "plain" in got and qname + "spaced" in got and qname + "z" in got
        assert qname + "nostats" not in got and qname + "str" not in got
        # stats_many() with no names covers every scanned queue, in scan order.
        got_stats = [s for s in ours.stats_many() if s.queue.startswith(qname)]
        want_stats = [s for s in official.stats_many() if s.queue.startswith(qname)]
        assert tagged(got_stats) == tagged(want_stats)
        assert [s.queue for s in got_stats] == got
    finally:
        r.delete(*odd)


def test_lenient_numbers(ours: QueueMonitor, official: Any, r: redis.Redis, qname: str) -> None:
    base = "{" + qname + "}"
    odd = ["", "abc", "1.7", "-1.7", " 12 ", "1e3", "inf", "nan", "１２", "1_000", "0x10",
           "99999999999999999999999", "12abc", "+7", "-0", "3.", ".5", "1e400"]
    stats_fields = [f.name for f in dataclasses.fields(QueueStats)][2:]
    r.hset(base + ":stats", mapping=dict(zip(stats_fields, odd)))
    job_fields = [f.name for f in dataclasses.fields(JobInfo)][1:]
    for n in range(len(odd)):
        values = {f: odd[(i + n) % len(odd)] for i, f in enumerate(job_fields)}
        r.hset(f"{base}:job:odd{n}", mapping=values)
    r.zadd(base + ":idx:wait", {f"odd{n}": n * 1.5 - 4 for n in range(len(odd))})
    r.zadd(base + ":idx:failed", {"odd0": float("inf"), "odd1": float("-inf"), "odd2": 1e20})
    r.zadd(base + ":groups:ready", {"g1": 2.5, "g2": -1.5, "g3": float("inf")})
    for i, value in enumerate(odd):
        r.set(f"{base}:g:g{i}:inflight", value)
        r.set(f"{base}:g:g{i}:limit", odd[-i])
    same(ours, official, "stats", qname)
    same(ours, official, "groups_ready_with_scores", qname)
    same(ours, official, "group_status", qname, [f"g{i}" for i in range(len(odd))], 2)
    same(ours, official, "lane_page", qname, "wait", 0, 25)
    same(ours, official, "lane_page", qname, "failed", 0, 25, True)
    same(ours, official, "find_jobs", qname, "failed", ["odd2", "odd1", "odd0"])
    for n in range(len(odd)):
        same(ours, official, "get_job", qname, f"odd{n}")
    same(ours, official, "overview", qname, 25)


@pytest.mark.parametrize(
    ("total", "waiting", "group_waiting"),
    [(None, 2, 3), ("0", 2, 3), ("1", 2, 3), ("-1", 2, 3), ("10", 2, 3), (None, -2, -3),
     ("-1", -2, -3), (None, 2, -5), ("-1", 2, -5), (None, 1, -1), ("-4", 0, 0), ("0.5", 0, 3)],
)
def test_waiting_total_fallback(
    ours: QueueMonitor, official: Any, r: redis.Redis, qname: str,
    total: Any, waiting: int, group_waiting: int,
) -> None:
    """The official monitor sums the waiting counters when the total is not positive but
    one of them is; found by experiment, kept exactly."""
    mapping: dict[str, Any] = {"waiting": waiting, "group_waiting": group_waiting}
    if total is not None:
        mapping["waiting_total"] = total
    r.hset("{" + qname + "}:stats", mapping=mapping)
    same(ours, official, "stats", qname)


def test_unreadable_data_reads_as_missing(
    ours: QueueMonitor, official: Any, r: redis.Redis, qname: str
) -> None:
    """Keys of the wrong type and bytes that are not UTF-8 give defaults, not errors."""
    base = "{" + qname + "}"
    wrong = qname + "w"
    wbase = "{" + wrong + "}"
    r.set(wbase + ":stats", "x")
    r.hset(wbase + ":paused", "a", "b")  # any type counts as paused
    r.rpush(wbase + ":idx:wait", "a")
    r.set(wbase + ":groups:ready", "x")
    r.set(wbase + ":idx:active", "x")
    r.hset(wbase + ":g:G:inflight", "a", "b")
    r.rpush(wbase + ":g:G:limit", "3")
    r.set(wbase + ":g:G:wait", "x")
    r.set(wbase + ":job:s", "x")
    r.zadd(wbase + ":idx:failed", {"s": 1, "ok": 2})
    r.hset(wbase + ":job:ok", "state", "failed")
    for method, args in [("stats", ()), ("lane_page", ("wait",)), ("lane_page", ("failed",)),
                         ("find_jobs", ("failed", ["s", "ok"])), ("find_jobs", ("active", ["s"])),
                         ("groups_ready", ()), ("group_status", (["G"],)), ("get_job", ("s",)),
                         ("overview", ())]:
        same(ours, official, method, wrong, *args)

    r.hset(base + ":stats", mapping={"waiting": "3", "junk": b"\xff"})
    r.set(base + ":g:G:limit", b"\xff3")
    r.set(base + ":g:G:inflight", "2")
    r.zadd(base + ":groups:ready", {b"\xff": 1, "ok": 2})
    r.zadd(base + ":idx:wait", {b"\xfe": 1, "ok": 2})
    r.zadd(base + ":idx:completed", {"bad": 1, "ok": 2, "other": 3})
    r.hset(base + ":job:ok", mapping={"state": "completed", "payload": "{}"})
    r.hset(base + ":job:bad", mapping={"state": "completed", "last_error": b"\xff"})
    r.hset(base + ":job:other", mapping={"foo": "bar"})  # exists, but no known field
    for method, args in [("stats", ()), ("group_status", (["G"],)), ("groups_ready", ()),
                         ("lane_page", ("wait",)), ("lane_page", ("completed",)),
                         ("find_jobs", ("completed", ["bad", "ok", "other"])),
                         ("get_job", ("bad",)), ("get_job", ("other",)), ("overview", ())]:
        same(ours, official, method, qname, *args)


def test_undecodable_payload_is_the_one_known_difference(
    ours: QueueMonitor, official: Any, r: redis.Redis, qname: str
) -> None:
    """Pages read only the fields they show (HMGET), so a payload that is not UTF-8 does
    not hide its job; the official monitor reads the whole hash, fails to decode it and
    leaves the job out. No client can write such a payload (JSON text is UTF-8)."""
    base = "{" + qname + "}"
    r.zadd(base + ":idx:failed", {"raw": 1})
    r.hset(base + ":job:raw", mapping={"state": "failed", "payload": b"\xff"})
    assert official.lane_page(qname, "failed") == []
    assert [job.job_id for job in ours.lane_page(qname, "failed")] == ["raw"]
    assert [job.job_id for job in ours.find_jobs(qname, "failed", ["raw"])] == ["raw"]
    # get_job shows the payload, so there both agree: unreadable means missing.
    same(ours, official, "get_job", qname, "raw")


BAD_NAMES = ["", " q", "q ", "a:b", "a{b", "a}b", "a b", "x" * 129, "é", "q\n", None]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_invalid_queue_names_raise_value_error(
    ours: QueueMonitor, official: Any, name: Any
) -> None:
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("stats", (name,)), ("stats_many", ([name],)), ("groups_ready", (name,)),
        ("groups_ready_with_scores", (name,)), ("group_status", (name, ["g"])),
        ("lane_page", (name, "wait")), ("find_jobs", (name, "wait", ["x"])),
        ("get_job", (name, "x")), ("get_job", (name, "")), ("overview", (name,)),
    ]
    for method, args in calls:
        assert same(ours, official, method, *args) == ValueError, method
        with pytest.raises(InvalidQueueName):
            getattr(ours, method)(*args)


def test_longest_valid_name(ours: QueueMonitor, official: Any, qname: str) -> None:
    same(ours, official, "stats", qname + "x" * (128 - len(qname)))


def test_bad_numbers_raise_like_the_official(ours: QueueMonitor, official: Any, qname: str) -> None:
    assert same(ours, official, "lane_page", qname, "wait", "x") == ValueError
    assert same(ours, official, "lane_page", qname, "wait", 0, "x") == ValueError
    assert same(ours, official, "groups_ready", qname, "x") == ValueError
    assert same(ours, official, "overview", qname, "x") == ValueError
    assert same(ours, official, "group_status", qname, ["g"], "abc") == ValueError
    assert same(ours, official, "group_status", qname, [], "abc") == ValueError
    assert same(ours, official, "group_status", qname, ["g"], None) == TypeError


# ---------------------------------------------------------------------------- cost


class CountingRedis(redis.Redis):
    """Counts round trips: single commands and pipeline executions."""

    round_trips = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            self.round_trips += 1
            return execute(raise_on_error)

        pipe.execute = counted
        return pipe


def test_reads_are_batched(
    official_client: Any, r: redis.Redis, redis_url: str, qname: str
) -> None:
    build_rich_queue(official_client, r, qname)
    ids = all_job_ids(r, qname)
    conn = CountingRedis.from_url(redis_url)
    monitor = QueueMonitor(conn)

    def trips(call: Callable[[], Any]) -> int:
        conn.round_trips = 0
        assert call() is not None
        return conn.round_trips

    try:
        assert trips(lambda: monitor.lane_page(qname, "completed", 0, 25)) == 2
        assert trips(lambda: monitor.find_jobs(qname, "wait", ids)) == 1
        assert trips(lambda: monitor.overview(qname, 25)) == 2
        assert trips(lambda: monitor.stats_many([qname] * 5)) == 1
        assert trips(lambda: monitor.group_status(qname, ["gA", "gB", "gC"])) == 1
        assert trips(lambda: monitor.get_job(qname, ids[0])) == 1
        assert trips(lambda: monitor.groups_ready(qname)) == 1
    finally:
        conn.close()


class CountingAsyncRedis(aioredis.Redis):
    """:class:`CountingRedis` for asyncio."""

    round_trips = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips += 1
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def counted(raise_on_error: bool = True) -> Any:
            self.round_trips += 1
            return await execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


def test_async_reads_are_batched(
    official_client: Any, r: redis.Redis, redis_url: str, qname: str, aio_loop: Any
) -> None:
    build_rich_queue(official_client, r, qname)
    ids = all_job_ids(r, qname)
    conn = CountingAsyncRedis.from_url(redis_url)
    monitor = BlockingView(AsyncQueueMonitor(conn), aio_loop)

    def trips(call: Callable[[], Any]) -> int:
        conn.round_trips = 0
        assert call() is not None
        return conn.round_trips

    try:
        assert trips(lambda: monitor.lane_page(qname, "completed", 0, 25)) == 2
        assert trips(lambda: monitor.find_jobs(qname, "wait", ids)) == 1
        assert trips(lambda: monitor.overview(qname, 25)) == 2
        assert trips(lambda: monitor.stats_many([qname] * 5)) == 1
        assert trips(lambda: monitor.group_status(qname, ["gA", "gB", "gC"])) == 1
        assert trips(lambda: monitor.get_job(qname, ids[0])) == 1
        assert trips(lambda: monitor.groups_ready(qname)) == 1
        assert trips(lambda: monitor.get_jobs(qname, [])) == 0
    finally:
        BlockingView(conn, aio_loop).aclose()
