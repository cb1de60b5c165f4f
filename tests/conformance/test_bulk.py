"""The bulk API against N single calls of the official SDK, keyspace for keyspace."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Pair
from omniq_fast import Client, InvalidPayload, Job, JobResult, Paused, ReservedJob
from omniq_fast import PublishManyError
from support import delete_prefixed

NOW = 1_700_000_000_000


@pytest.fixture
def ours(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    # Both shells (Client, AsyncClient behind blocking calls): the same checks on each.
    with shell(redis_url, _core=core) as c:
        yield c


def pair_for(ours: Client, oracle: Any, r: redis.Redis, r2: redis.Redis, q: str) -> Pair:
    return Pair(ours, oracle, r, r2, "{" + q)


def official_reserve(oracle: Any, q: str, n: int, now: int) -> list[Any]:
    out = []
    for _ in range(n):
        res = oracle.reserve(queue=q, now_ms_override=now)
        if res is None or res.status != "JOB":
            break
        out.append(res)
    return out


def same_job(ours: ReservedJob, theirs: Any) -> bool:
    return all(getattr(ours, f) == getattr(theirs, f) for f in ReservedJob.__dataclass_fields__)


MIX = [
    Job({"i": 0}, job_id="a0"),
    Job([1, "é"], job_id="a1", gid="g1", group_limit=2),
    Job({"i": 2}, job_id="a2", gid="g1"),
    Job({"i": 3}, job_id="a3", due_ms=NOW + 5_000),
    Job({"i": 4}, job_id="a4", gid="g2", max_attempts=1, timeout_ms=1_000, backoff_ms=0),
    Job({"i": 5}, job_id="a5", max_attempts=2, backoff_ms=100),
    Job({"i": 6}, job_id="a6", gid="g1"),
]


def publish_both(pair: Pair, q: str, jobs: list[Job], ours: Client, oracle: Any) -> list[str]:
    ids = ours.publish_many(q, jobs, now_ms_override=NOW, batch_size=3)
    for job in jobs:
        kw = {k: getattr(job, k) for k in Job.__dataclass_fields__ if getattr(job, k) is not None}
        oracle.publish(queue=q, now_ms_override=NOW, **kw)
    return ids


def test_publish_many_equals_single_publishes(
    ours: Client, oracle: Any, r: redis.Redis, r2: redis.Redis, qname: str
) -> None:
    pair = pair_for(ours, oracle, r, r2, qname)
    assert publish_both(pair, qname, MIX, ours, oracle) == [j.job_id for j in MIX]
    pair.assert_same_keyspace()


def test_reserve_ack_many_equal_single_calls(
    ours: Client, oracle: Any, r: redis.Redis, r2: redis.Redis, qname: str
) -> None:
    pair = pair_for(ours, oracle, r, r2, qname)
    publish_both(pair, qname, MIX, ours, oracle)
    got = ours.reserve_many(qname, 5, now_ms_override=NOW + 1)
    theirs = official_reserve(oracle, qname, 5, NOW + 1)
    assert isinstance(got, list) and len(got) == len(theirs) > 0
    assert all(same_job(a, b) for a, b in zip(got, theirs))
    pair.assert_same_keyspace()

    beats = ours.heartbeat_many(qname, got[:2], now_ms_override=NOW + 2)
    for job in theirs[:2]:
        oracle.heartbeat(queue=qname, job_id=job.job_id, lease_token=job.lease_token,
                         now_ms_override=NOW + 2)  # fmt: skip
    assert [b.status for b in beats] == ["OK", "OK"] and all(b.ms for b in beats)
    pair.assert_same_keyspace()

    # One good ack, one failure, one stale token: results per job, in order.
    acks = ours.ack_success_many(qname, [got[0], (got[1].job_id, "f" * 40)], now_ms_override=NOW + 3)
    oracle.ack_success(queue=qname, job_id=theirs[0].job_id, lease_token=theirs[0].lease_token,
                       now_ms_override=NOW + 3)  # fmt: skip
    with pytest.raises(RuntimeError):
        oracle.ack_success(queue=qname, job_id=theirs[1].job_id, lease_token="f" * 40,
                           now_ms_override=NOW + 3)  # fmt: skip
    assert acks == [JobResult(got[0].job_id, "OK"), JobResult(got[1].job_id, "ERR", reason="TOKEN_MISMATCH")]
    pair.assert_same_keyspace()

    fails = ours.ack_fail_many(
        qname, got[1:], ["E: boom"] * len(got[1:]), now_ms_override=NOW + 4
    )
    expected = []
    for job in theirs[1:]:
        outcome, due = oracle.ack_fail(queue=qname, job_id=job.job_id, lease_token=job.lease_token,
                                       error="E: boom", now_ms_override=NOW + 4)  # fmt: skip
        expected.append((outcome, due))
    assert [(f.status, f.ms) for f in fails] == expected
    pair.assert_same_keyspace()


def test_reserve_many_empty_and_paused(ours: Client, qname: str) -> None:
    assert ours.reserve_many(qname, 10) == []
    ours.publish(qname, {})
    ours.pause(qname)
    assert ours.reserve_many(qname, 10) == Paused()


def test_publish_many_streams_a_generator(ours: Client, qname: str) -> None:
    ids = ours.publish_many(qname, ({"i": i} for i in range(5_000)), batch_size=700)
    assert len(ids) == len(set(ids)) == 5_000
    assert ours.redis.llen("{" + qname + "}:wait") == 5_000
    assert ours.redis.lrange("{" + qname + "}:wait", 0, 2) == [i.encode() for i in ids[:3]]


def test_publish_many_bad_first_batch_writes_nothing(ours: Client, qname: str) -> None:
    with pytest.raises(InvalidPayload):
        ours.publish_many(qname, [{"ok": 1}, "not structured"], batch_size=10)
    assert ours.redis.exists("{" + qname + "}:wait") == 0


def test_publish_many_bad_later_batch_reports_what_was_written(ours: Client, qname: str) -> None:
    items: list[Any] = [{"i": i} for i in range(25)] + [{"bad": float("nan")}]
    with pytest.raises(PublishManyError) as info:
        ours.publish_many(qname, items, batch_size=10)
    err = info.value
    assert isinstance(err.__cause__, InvalidPayload)
    assert len(err.written) == 20 and err.unknown == []
    queued = [x.decode() for x in ours.redis.lrange("{" + qname + "}:wait", 0, -1)]
    assert queued == err.written


ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.lists(
            st.tuples(st.sampled_from([None, "g1", "g2"]), st.sampled_from([0, 1, 2]),
                      st.sampled_from([0, 3_000])), min_size=1, max_size=6)),
        st.tuples(st.just("reserve"), st.integers(1, 6)),
        st.tuples(st.just("ack"), st.integers(0, 5)),
        st.tuples(st.just("fail"), st.integers(0, 5)),
        st.tuples(st.just("advance"), st.sampled_from([1, 4_000, 40_000])),
    ),
    max_size=12,
)  # fmt: skip


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(steps=ops)
def test_random_bulk_sequences_equal_single_calls(
    steps: list[Any], ours: Client, oracle: Any, r: redis.Redis, r2: redis.Redis, qname: str
) -> None:
    pair = pair_for(ours, oracle, r, r2, qname)
    now, counter, held = NOW, 0, []
    try:
        for op, arg in steps:
            if op == "advance":
                now += arg
                ours.promote_delayed(qname, now_ms_override=now)
                oracle.promote_delayed(queue=qname, now_ms_override=now)
                ours.reap_expired(qname, now_ms_override=now)
                oracle.reap_expired(queue=qname, now_ms_override=now)
            elif op == "publish":
                jobs = []
                for gid, limit, due in arg:
                    counter += 1
                    jobs.append(Job({"n": counter}, job_id=f"j{counter}", gid=gid,
                                    group_limit=limit if gid else 0,
                                    due_ms=now + due if due else 0, timeout_ms=5_000,
                                    backoff_ms=1_000, max_attempts=2))  # fmt: skip
                ours.publish_many(qname, jobs, now_ms_override=now, batch_size=4)
                for j in jobs:
                    oracle.publish(queue=qname, payload=j.payload, job_id=j.job_id, gid=j.gid,
                                   group_limit=j.group_limit, due_ms=j.due_ms,
                                   timeout_ms=5_000, backoff_ms=1_000, max_attempts=2,
                                   now_ms_override=now)  # fmt: skip
            elif op == "reserve":
                got = ours.reserve_many(qname, arg, now_ms_override=now)
                theirs = official_reserve(oracle, qname, arg, now)
                if isinstance(got, Paused):
                    raise AssertionError("never paused here")
                assert len(got) == len(theirs)
                assert all(same_job(a, b) for a, b in zip(got, theirs))
                held.extend(got)
            elif op in ("ack", "fail") and held:
                take, held = held[: arg + 1], held[arg + 1 :]
                if op == "ack":
                    ours.ack_success_many(qname, take, now_ms_override=now)
                else:
                    ours.ack_fail_many(qname, take, ["x"] * len(take), now_ms_override=now)
                for j in take:
                    try:
                        if op == "ack":
                            oracle.ack_success(queue=qname, job_id=j.job_id,
                                               lease_token=j.lease_token, now_ms_override=now)
                        else:
                            oracle.ack_fail(queue=qname, job_id=j.job_id, error="x",
                                            lease_token=j.lease_token, now_ms_override=now)
                    except RuntimeError:
                        pass  # reaped meanwhile: ours answered ERR for it too
            pair.assert_same_keyspace()
    finally:
        delete_prefixed(r, "{" + qname)
        delete_prefixed(r2, "{" + qname)
