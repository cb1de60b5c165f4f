"""Our batched scripts against N single calls of the official SDK, keyspace for keyspace.

Each case builds one starting state on two databases with the official client (through
``oracle_on_ours`` on our database and ``oracle`` on the oracle's), then does the same work
twice: ONE batched script of ours (run directly with EVAL) on our database, and N consecutive
single calls of the official client on the oracle database. The replies must correspond (our
per-job results against what each single call returned or raised) and every key of the
queue must be the same on both databases afterwards.
"""

# Shell-independent: our Lua runs with EVAL, bypassing both clients (the shells send these
# same scripts; their calls are compared on both shells in test_random_sequences, test_release,
# test_bulk and test_interop).
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness import (
    assert_same_snapshots,
    call_official,
    decoded,
    payload_json,
    plain_official,
)
from support import delete_prefixed, run_script, snapshot


def _reason(result: Any, label: str) -> str:
    """The reason code of an official lease error ("ACK_SUCCESS failed: TOKEN_MISMATCH")."""
    prefix = f"{label} failed: "
    if not (isinstance(result, RuntimeError) and str(result).startswith(prefix)):
        raise AssertionError(f"expected a {label} error, got {plain_official(result)!r}")
    return str(result)[len(prefix):]


@dataclasses.dataclass
class Job:
    """One enqueue: the fields PROTOCOL.md §5 gives it (publish defaults)."""

    job_id: str
    payload: Any = None
    max_attempts: int = 3
    timeout_ms: int = 30000
    backoff_ms: int = 5000
    due_ms: int = 0
    gid: str | None = None
    group_limit: int = 0

    def publish_kwargs(self) -> dict[str, Any]:
        return dict(
            payload=self.body(), job_id=self.job_id, max_attempts=self.max_attempts,
            timeout_ms=self.timeout_ms, backoff_ms=self.backoff_ms, due_ms=self.due_ms,
            gid=self.gid, group_limit=self.group_limit,
        )

    def body(self) -> Any:
        return {"id": self.job_id} if self.payload is None else self.payload

    def batch_fields(self) -> list[Any]:
        # The official client sends a negative group_limit as 0; ours ignores it either way.
        return [self.job_id, payload_json(self.body()), self.max_attempts, self.timeout_ms,
                self.backoff_ms, self.due_ms, self.gid or "", max(self.group_limit, 0)]


Lease = tuple[str, str]  # (job id, lease token)


class Twin:
    """One queue on two databases: ``r`` (ours) and ``r2`` (the oracle's)."""

    def __init__(self, ours_official: Any, oracle: Any, r: redis.Redis, r2: redis.Redis,
                 queue: str) -> None:
        self.sides = (ours_official, oracle)
        self.oracle = oracle
        self.r, self.r2, self.queue = r, r2, queue
        self.anchor = "{" + queue + "}:meta"

    def __repr__(self) -> str:
        return f"<Twin {self.queue}>"

    def key(self, suffix: str) -> str:
        return "{" + self.queue + "}:" + suffix

    # -- setting up the same state on both databases ---------------------------------------

    def both(self, method: str, **kwargs: Any) -> Any:
        """The same official call on both databases; the results must agree."""
        results = [call_official(lambda c=client: getattr(c, method)(queue=self.queue, **kwargs))
                   for client in self.sides]
        ours, theirs = (plain_official(x) for x in results)
        assert ours == theirs, f"setup {method} differs: {ours!r} vs {theirs!r}"
        return results[1]

    def publish(self, job: Job, now: int) -> None:
        self.both("publish", now_ms_override=now, **job.publish_kwargs())

    def publish_many(self, jobs: list[Job], now: int) -> None:
        for job in jobs:
            self.publish(job, now)

    def reserve(self, now: int) -> Lease | None:
        result = self.both("reserve", now_ms_override=now)
        if result is None or not hasattr(result, "lease_token"):
            return None
        return result.job_id, result.lease_token

    def reserve_all(self, now: int) -> list[Lease]:
        leases = []
        while (lease := self.reserve(now)) is not None:
            leases.append(lease)
        return leases

    def raw(self, *command: Any) -> None:
        """The same plain command on both databases, for states scripts never make."""
        self.r.execute_command(*command)
        self.r2.execute_command(*command)

    def assert_same_keys(self) -> None:
        prefix = "{" + self.queue + "}"
        assert_same_snapshots(snapshot(self.r, prefix), snapshot(self.r2, prefix))

    # -- one batch of ours against N single official calls ---------------------------------

    def ours(self, script: str, *argv: Any) -> Any:
        return decoded(run_script(self.r, script, self.anchor, *argv))

    def enqueue_batch(self, now: int, jobs: list[Job]) -> Any:
        # The one documented divergence (README "Deliberate divergences"): a job whose id
        # exists — before the call or from an earlier job of it — is not written again.
        # The oracle gets the single calls ours would do, the fresh jobs only; the reply
        # names the skipped positions.
        seen: set[str] = set()
        duplicates = []
        for i, job in enumerate(jobs, 1):
            if job.job_id in seen or self.r.exists(self.key("job:" + job.job_id)):
                duplicates.append(str(i))
            seen.add(job.job_id)
        fresh = [job for i, job in enumerate(jobs, 1) if str(i) not in duplicates]
        theirs = [call_official(lambda j=job: self.oracle.publish(
            queue=self.queue, now_ms_override=now, **j.publish_kwargs())) for job in fresh]
        assert theirs == [job.job_id for job in fresh], [plain_official(x) for x in theirs]
        argv: list[Any] = [now, len(jobs)]
        for job in jobs:
            argv.extend(job.batch_fields())
        reply = self.ours("enqueue_batch", *argv)
        assert reply == ["OK", str(len(fresh)), *duplicates], reply
        self.assert_same_keys()
        return reply

    def reserve_batch(self, now: int, max_n: int) -> list[Lease]:
        results = []
        while len(results) < max_n:
            result = call_official(
                lambda: self.oracle.reserve(queue=self.queue, now_ms_override=now))
            if result is None or not hasattr(result, "lease_token"):
                break  # the call that found nothing (or the queue paused) ends the run
            results.append(result)
        if results:
            expected = ["JOB", str(len(results))]
            for job in results:
                expected += [job.job_id, job.payload, str(job.lock_until_ms), str(job.attempt),
                             str(job.max_attempts), job.gid, job.lease_token]
        elif result is None:
            expected = ["EMPTY"]
        else:
            assert getattr(result, "status", None) == "PAUSED", plain_official(result)
            expected = ["PAUSED"]
        reply = self.ours("reserve_batch", now, max_n)
        assert reply == expected, f"reserve_batch reply differs: {reply!r} vs {expected!r}"
        self.assert_same_keys()
        return [(job.job_id, job.lease_token) for job in results]

    def _lease_batch(self, script: str, now: int, items: list[tuple], method: str,
                     convert: Callable[[Any], list[str]]) -> list[str]:
        expected: list[str] = []
        argv: list[Any] = [now, len(items)]
        for item in items:
            job_id, token = item[0], item[1]
            extra = {"error": item[2] or None} if method == "ack_fail" else {}
            expected += convert(call_official(lambda: getattr(self.oracle, method)(
                queue=self.queue, job_id=job_id, lease_token=token, now_ms_override=now,
                **extra)))
            argv.extend(item[:2] + ((item[2] or "",) if method == "ack_fail" else ()))
        reply = self.ours(script, *argv)
        assert reply == expected, f"{script} reply differs: {reply!r} vs {expected!r}"
        self.assert_same_keys()
        return reply

    def ack_success_batch(self, now: int, leases: list[Lease]) -> list[str]:
        def convert(result: Any) -> list[str]:
            return ["OK"] if result is None else [_reason(result, "ACK_SUCCESS")]

        return self._lease_batch("ack_success_batch", now, leases, "ack_success", convert)

    def ack_fail_batch(self, now: int, items: list[tuple[str, str, str | None]]) -> list[str]:
        def convert(result: Any) -> list[str]:
            if isinstance(result, RuntimeError):
                return ["ERR", _reason(result, "ACK_FAIL")]
            if result == ("FAILED", None):
                return ["FAILED", ""]
            assert isinstance(result, tuple) and result[0] == "RETRY", plain_official(result)
            return ["RETRY", str(result[1])]

        return self._lease_batch("ack_fail_batch", now, items, "ack_fail", convert)

    def heartbeat_batch(self, now: int, leases: list[Lease]) -> list[str]:
        def convert(result: Any) -> list[str]:
            if isinstance(result, RuntimeError):
                return ["ERR", _reason(result, "HEARTBEAT")]
            assert isinstance(result, int), plain_official(result)
            return ["OK", str(result)]

        return self._lease_batch("heartbeat_batch", now, leases, "heartbeat", convert)


@pytest.fixture
def twin(oracle_on_ours: Any, oracle: Any, r: redis.Redis, r2: redis.Redis, qname: str) -> Twin:
    return Twin(oracle_on_ours, oracle, r, r2, qname)


def _jobs(prefix: str, count: int, **fields: Any) -> list[Job]:
    return [Job(f"{prefix}{i}", **fields) for i in range(count)]


def _pairs(reply: list[str], width: int) -> list[list[str]]:
    return [reply[i:i + width] for i in range(0, len(reply), width)]


# -- argument checks (ours only: the official SDK has no batches) -----------------------------


@pytest.mark.parametrize(
    "script,width", [("enqueue_batch", 8), ("ack_success_batch", 2), ("ack_fail_batch", 3),
                     ("heartbeat_batch", 2)],
)
def test_batch_size_checks(twin: Twin, script: str, width: int) -> None:
    assert twin.ours(script, 1000, 1001) == ["ERR", "BATCH_TOO_LARGE", "1000"]
    assert twin.ours(script, 1000, 1001, *(["x"] * width * 1001)) == [
        "ERR", "BATCH_TOO_LARGE", "1000"]
    assert twin.ours(script, 1000, 2, *(["x"] * width)) == ["ERR", "BAD_ARGS"]
    assert twin.ours(script, 1000, 1, *(["x"] * (width + 1))) == ["ERR", "BAD_ARGS"]
    for bad in ("-1", "1.5", "x", ""):
        assert twin.ours(script, 1000, bad) == ["ERR", "BAD_ARGS"]
    assert twin.ours(script, 1000) == ["ERR", "BAD_ARGS"]
    assert snapshot(twin.r, "{" + twin.queue + "}") == {}


def test_batch_of_zero(twin: Twin) -> None:
    assert twin.ours("enqueue_batch", 1000, 0) == ["OK", "0"]
    for script in ("ack_success_batch", "ack_fail_batch", "heartbeat_batch"):
        assert twin.ours(script, 1000, 0) == []
    assert snapshot(twin.r, "{" + twin.queue + "}") == {}


def test_reserve_batch_argument_checks(twin: Twin) -> None:
    twin.publish(Job("J1"), 1000)
    for bad in ("0", "-3", "1.5", "x", ""):
        assert twin.ours("reserve_batch", 2000, bad) == ["ERR", "BAD_ARGS"]
    assert twin.ours("reserve_batch", 2000) == ["ERR", "BAD_ARGS"]
    assert twin.ours("reserve_batch", 2000, 1, "extra") == ["ERR", "BAD_ARGS"]
    assert twin.ours("reserve_batch", 2000, 1001) == ["ERR", "BATCH_TOO_LARGE", "1000"]
    twin.assert_same_keys()  # nothing was reserved


# -- enqueue_batch -----------------------------------------------------------------------------


def test_enqueue_batch_ungrouped(twin: Twin) -> None:
    twin.enqueue_batch(1000, _jobs("J", 5))
    twin.enqueue_batch(1001, [Job("K1", payload=[1, "é", {"ü": None}], max_attempts=7,
                                  timeout_ms=0, backoff_ms=1), Job("K2", max_attempts=0)])


def test_enqueue_batch_mixed_lanes_and_limits(twin: Twin) -> None:
    jobs = []
    for i in range(12):
        gid = [None, "a", "b", "c"][i % 4]
        limit = {"a": 1, "b": 2, "c": 3}.get(gid or "", 0)
        due = 5000 + i if i % 3 == 0 else 0
        jobs.append(Job(f"J{i}", gid=gid, group_limit=limit, due_ms=due))
    twin.enqueue_batch(1000, jobs)
    twin.reserve_batch(1001, 20)


def test_enqueue_batch_limit_first_writer_wins(twin: Twin) -> None:
    twin.publish(Job("P0", gid="h", group_limit=2), 900)
    twin.enqueue_batch(1000, [
        Job("G0", gid="g"),                      # no limit yet: 1
        Job("G1", gid="g", group_limit=3),       # sets it
        Job("G2", gid="g", group_limit=5),       # first writer won
        Job("H0", gid="h", group_limit=7),       # limit existed before the batch
        Job("D0", gid="d", group_limit=2, due_ms=9000),  # a delayed job sets the limit too
        Job("D1", gid="d"),
        Job("E0", gid="e", group_limit=-1),
        Job("E1", gid="e", group_limit=0),
    ])
    twin.reserve_batch(1100, 10)


def test_enqueue_batch_group_at_limit(twin: Twin) -> None:
    twin.publish_many([Job("A0", gid="a"), Job("B0", gid="b", group_limit=2),
                       Job("B1", gid="b")], 900)
    twin.reserve_all(950)  # a: 1/1 and b: 2/2 in flight, groups:ready empty
    twin.enqueue_batch(1000, [Job("A1", gid="a"), Job("B2", gid="b"), Job("C0", gid="c")])
    twin.enqueue_batch(1001, [Job("A2", gid="a", group_limit=3), Job("A3", gid="a")])
    twin.reserve_batch(1002, 10)


def test_enqueue_batch_group_limit_raised_mid_batch(twin: Twin) -> None:
    twin.publish(Job("G0", gid="g"), 900)
    twin.reserve(950)  # g at its (implicit) limit of 1
    # G1 finds g full and does not offer it; G2 sets the limit to 2, so G2 offers it.
    twin.enqueue_batch(1000, [Job("G1", gid="g"), Job("G2", gid="g", group_limit=2)])
    twin.reserve_batch(1001, 5)


def test_enqueue_batch_group_already_offered(twin: Twin) -> None:
    twin.publish(Job("G0", gid="g", group_limit=3), 900)  # offered at 900
    twin.enqueue_batch(1000, [Job("G1", gid="g"), Job("H0", gid="h")])  # NX keeps 900


def test_enqueue_batch_duplicate_ids(twin: Twin) -> None:
    reply = twin.enqueue_batch(1000, [
        Job("J1", gid="g", max_attempts=5),
        Job("J1"),                       # the first J1 stands; these are skipped
        Job("J1", due_ms=4000),
        Job("J2", due_ms=3000),
        Job("J2", due_ms=2000),
        Job("J2"),
    ])
    assert reply == ["OK", "2", "2", "3", "5", "6"]
    twin.reserve_batch(1001, 10)


def test_enqueue_batch_reused_existing_ids(twin: Twin) -> None:
    twin.publish(Job("J1", gid="g", max_attempts=5), 900)
    lease = twin.reserve(950)
    assert lease is not None
    assert twin.enqueue_batch(1000, [Job("J1"), Job("J2", gid="g")]) == ["OK", "1", "1"]
    twin.heartbeat_batch(1001, [lease])
    twin.ack_success_batch(1002, [lease])


def test_enqueue_batch_due_equal_now_is_ready(twin: Twin) -> None:
    twin.enqueue_batch(1000, [Job("J1", due_ms=1000), Job("J2", due_ms=999, gid="g"),
                              Job("J3", due_ms=1001, gid="g")])


def test_enqueue_batch_of_1000(twin: Twin) -> None:
    jobs = [Job(f"J{i:04}", gid=[None, "a", "b"][i % 3], group_limit=i % 4,
                due_ms=2000 if i % 7 == 0 else 0) for i in range(1000)]
    twin.enqueue_batch(1000, jobs)


# -- reserve_batch -----------------------------------------------------------------------------


def test_reserve_batch_empty(twin: Twin) -> None:
    assert twin.reserve_batch(1000, 5) == []
    twin.publish(Job("J1", due_ms=9000), 1000)
    assert twin.reserve_batch(1001, 5) == []


def test_reserve_batch_paused(twin: Twin) -> None:
    twin.publish(Job("J1"), 1000)
    twin.both("pause")
    assert twin.reserve_batch(1001, 5) == []
    twin.both("resume")
    assert [lease[0] for lease in twin.reserve_batch(1002, 5)] == ["J1"]


def test_reserve_batch_ungrouped_more_than_available(twin: Twin) -> None:
    twin.publish_many(_jobs("J", 5), 1000)
    assert [lease[0] for lease in twin.reserve_batch(2000, 3)] == ["J0", "J1", "J2"]
    assert [lease[0] for lease in twin.reserve_batch(2001, 10)] == ["J3", "J4"]
    twin.reserve_batch(2002, 10)


def test_reserve_batch_one(twin: Twin) -> None:
    twin.publish_many(_jobs("J", 2) + _jobs("G", 2, gid="g"), 1000)
    for now in range(2000, 2006):
        twin.reserve_batch(now, 1)


def test_reserve_batch_lane_round_robin(twin: Twin) -> None:
    for i in range(4):
        twin.publish(Job(f"U{i}"), 1000 + i)
        twin.publish(Job(f"G{i}", gid=f"g{i}"), 1000 + i)
    got = [lease[0] for lease in twin.reserve_batch(2000, 5)]
    assert got == ["G0", "U0", "G1", "U1", "G2"]
    twin.reserve_batch(2001, 10)


@pytest.mark.parametrize("rr", ["0", "1", "5", "x"])
def test_reserve_batch_lane_rr_start(twin: Twin, rr: str) -> None:
    twin.publish_many(_jobs("U", 3) + [Job("G0", gid="g"), Job("H0", gid="h")], 1000)
    twin.raw("SET", twin.key("lane:rr"), rr)
    twin.reserve_batch(2000, 4)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_reserve_batch_grouped_limits(twin: Twin, limit: int) -> None:
    for i in range(5):
        twin.publish(Job(f"A{i}", gid="a", group_limit=limit), 1000 + i)
        twin.publish(Job(f"B{i}", gid="b", group_limit=limit), 1000 + i)
    twin.publish_many(_jobs("U", 3), 1010)
    twin.reserve_batch(2000, 50)  # stops when the groups are at their limits and U is done
    twin.reserve_batch(2001, 5)


def test_reserve_batch_groups_take_turns(twin: Twin) -> None:
    for i in range(4):
        twin.publish(Job(f"A{i}", gid="a", group_limit=3), 1000 + i)
        twin.publish(Job(f"B{i}", gid="b", group_limit=2), 1000)
        twin.publish(Job(f"C{i}", gid="c"), 999)
    twin.reserve_batch(2000, 7)


def test_reserve_batch_group_at_limit_offered_later(twin: Twin) -> None:
    twin.publish_many([Job("G0", gid="g"), Job("H0", gid="h"), Job("U0"), Job("U1")], 1000)
    twin.raw("SET", twin.key("g:g:inflight"), "1")  # g offered while at its limit
    twin.reserve_batch(2000, 10)
    twin.raw("SET", twin.key("g:g:inflight"), "0")
    twin.reserve_batch(2001, 10)


def test_reserve_batch_ten_blocked_groups(twin: Twin) -> None:
    for i in range(12):
        twin.publish(Job(f"G{i}", gid=f"g{i:02}"), 1000)
    twin.publish_many(_jobs("U", 2), 1000)
    for i in range(11):
        twin.raw("SET", twin.key(f"g:g{i:02}:inflight"), "1")
    # Grouped first: ten blocked rounds, then U0; U1; ten more rounds reach g11.
    twin.reserve_batch(2000, 10)
    twin.reserve_batch(2001, 10)
    twin.raw("DEL", twin.key("g:g00:inflight"))
    twin.reserve_batch(2002, 10)


def test_reserve_batch_stops_at_empty_keeping_its_effects(twin: Twin) -> None:
    for i in range(11):
        twin.publish(Job(f"G{i}", gid=f"g{i:02}"), 1000)
        twin.raw("SET", twin.key(f"g:g{i:02}:inflight"), "1")
    twin.publish(Job("H0", gid="h"), 1000)
    assert twin.reserve_batch(2000, 5) == []  # the EMPTY call re-offered ten groups
    twin.reserve_batch(2001, 5)


def test_reserve_batch_skips_empty_gid_and_empty_list(twin: Twin) -> None:
    twin.publish_many([Job("G0", gid="g"), Job("H0", gid="h"), Job("K0", gid="k")], 1000)
    twin.raw("ZADD", twin.key("groups:ready"), "0", "")
    twin.raw("DEL", twin.key("g:g:wait"))
    twin.reserve_batch(2000, 5)


def test_reserve_batch_stats_floor(twin: Twin) -> None:
    # Counters that drifted to 0: groups_ready goes down and up within the batch.
    twin.publish_many([Job("G0", gid="g", group_limit=3), Job("G1", gid="g"), Job("G2", gid="g"),
                       Job("H0", gid="h"), Job("U0")], 1000)
    twin.raw("SET", twin.key("g:h:inflight"), "1")
    twin.raw("DEL", twin.key("stats"))
    twin.reserve_batch(2000, 10)
    twin.raw("HSET", twin.key("stats"), "groups_ready", "0", "waiting", "0")
    twin.publish_many([Job("G3", gid="g"), Job("G4", gid="g")], 2001)
    twin.raw("HSET", twin.key("stats"), "groups_ready", "0")
    twin.raw("SET", twin.key("g:g:inflight"), "0")
    twin.reserve_batch(2002, 10)


def test_reserve_batch_job_hash_gone(twin: Twin) -> None:
    twin.publish_many([Job("J1"), Job("G1", gid="g"), Job("J2")], 1000)
    twin.raw("DEL", twin.key("job:J1"), twin.key("job:G1"))
    twin.reserve_batch(2000, 5)


def test_reserve_batch_same_id_twice(twin: Twin) -> None:
    twin.publish(Job("J1", timeout_ms=100), 1000)
    twin.publish(Job("J1", timeout_ms=200), 1001)  # queued twice
    twin.publish(Job("G1", gid="g", group_limit=2), 1002)
    twin.publish(Job("G1", gid="g"), 1003)
    twin.reserve_batch(2000, 10)


def test_reserve_batch_timeouts_and_attempts(twin: Twin) -> None:
    twin.publish_many([Job("J1", timeout_ms=0), Job("J2", timeout_ms=-5),
                       Job("J3", max_attempts=2, backoff_ms=0)], 1000)
    leases = twin.reserve_batch(2000, 3)
    twin.ack_fail_batch(2001, [(job_id, token, None) for job_id, token in leases])
    twin.both("promote_delayed", max_promote=10, now_ms_override=2001)
    twin.reserve_batch(2002, 3)  # a second attempt keeps first_started_ms


def test_reserve_batch_with_seq_counter(twin: Twin) -> None:
    twin.raw("SET", twin.key("lease:seq"), "41")
    twin.publish_many(_jobs("J", 3), 1000)
    twin.reserve_batch(2000, 3)


def test_reserve_batch_of_1000(twin: Twin) -> None:
    twin.enqueue_batch(1000, [Job(f"J{i:04}", gid=[None, "a", "b", "c"][i % 4],
                                  group_limit=i % 3 + 1) for i in range(1000)])
    twin.reserve_batch(2000, 1000)
    twin.reserve_batch(2001, 1000)


# -- ack_success_batch -------------------------------------------------------------------------


def test_ack_success_batch_ungrouped(twin: Twin) -> None:
    twin.publish_many(_jobs("J", 4), 1000)
    leases = twin.reserve_all(2000)
    assert twin.ack_success_batch(3000, leases) == ["OK"] * 4


def test_ack_success_batch_errors_mid_batch(twin: Twin) -> None:
    twin.publish_many(_jobs("J", 5), 1000)
    leases = twin.reserve_all(2000)
    twin.raw("ZREM", twin.key("active"), "J3")
    batch = [leases[0], (leases[1][0], ""), (leases[2][0], "bogus"), leases[1], leases[3],
             leases[0], ("missing", "t"), leases[4], ("missing", "")]
    assert twin.ack_success_batch(3000, batch) == [
        "OK", "TOKEN_REQUIRED", "TOKEN_MISMATCH", "OK", "NOT_ACTIVE", "TOKEN_MISMATCH",
        "TOKEN_MISMATCH", "OK", "TOKEN_REQUIRED"]


def test_ack_success_batch_all_refused(twin: Twin) -> None:
    twin.publish(Job("J1"), 1000)
    job_id, _ = twin.reserve(2000) or ("", "")
    twin.ack_success_batch(3000, [(job_id, ""), (job_id, "nope")])


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_ack_success_batch_releases_groups(twin: Twin, limit: int) -> None:
    for i in range(6):
        twin.publish(Job(f"A{i}", gid="a", group_limit=limit), 1000)
        twin.publish(Job(f"B{i}", gid="b", group_limit=limit), 1000)
    twin.publish(Job("C0", gid="c"), 1000)
    leases = twin.reserve_all(2000)
    twin.ack_success_batch(3000, leases)
    twin.reserve_batch(3001, 20)


def test_ack_success_batch_group_offered_already(twin: Twin) -> None:
    twin.publish_many(_jobs("G", 4, gid="g", group_limit=2), 1000)
    a, b = twin.reserve_all(2000)
    twin.ack_success_batch(2500, [a])  # g offered at 2500
    twin.ack_success_batch(3000, [b])  # NX keeps 2500


def test_ack_success_batch_inflight_floor(twin: Twin) -> None:
    twin.publish_many(_jobs("G", 4, gid="g", group_limit=3), 1000)
    leases = twin.reserve_all(2000)
    twin.raw("SET", twin.key("g:g:inflight"), "1")  # drifted below the real count
    twin.ack_success_batch(3000, leases)
    twin.raw("DEL", twin.key("g:g:inflight"))
    twin.reserve_batch(3001, 5)


def test_ack_success_batch_trims_completed_past_100(twin: Twin) -> None:
    twin.enqueue_batch(1000, _jobs("A", 95))
    twin.ack_success_batch(3000, twin.reserve_batch(2000, 95))
    twin.enqueue_batch(4000, _jobs("B", 10) + _jobs("G", 3, gid="g", group_limit=3))
    leases = twin.reserve_batch(5000, 13)
    leases.insert(4, (leases[0][0], "bogus"))
    twin.ack_success_batch(6000, leases)  # crosses 100 inside the batch
    assert twin.r.llen(twin.key("completed")) == 100


def test_ack_success_batch_trims_its_own_jobs(twin: Twin) -> None:
    # 150 successes in one batch: the first 50 of them are pushed out again.
    twin.enqueue_batch(1000, _jobs("J", 150))
    twin.ack_success_batch(3000, twin.reserve_batch(2000, 150))
    assert twin.r.llen(twin.key("completed")) == 100


def test_ack_success_batch_completed_list_longer_than_100(twin: Twin) -> None:
    for i in range(104):
        twin.raw("LPUSH", twin.key("completed"), f"OLD{i}")
        twin.raw("HSET", twin.key(f"job:OLD{i}"), "state", "completed")
        twin.raw("ZADD", twin.key("idx:completed"), "500", f"OLD{i}")
    twin.publish_many(_jobs("J", 3), 1000)
    twin.ack_success_batch(3000, twin.reserve_all(2000))


def test_ack_success_batch_trim_deletes_a_reused_active_id(twin: Twin) -> None:
    # J1 completed long ago (the oldest entry in completed) and was published again; the
    # batch's first success trims the old entry, deleting J1's hash before J1's own ack.
    twin.publish(Job("J1"), 900)
    first = twin.reserve(901)
    assert first is not None
    twin.ack_success_batch(902, [first])
    for i in range(99):
        twin.raw("LPUSH", twin.key("completed"), f"OLD{i}")
    twin.publish_many([Job("J1"), Job("J2"), Job("J3")], 1000)
    leases = twin.reserve_all(2000)
    by_id = dict(leases)
    assert twin.ack_success_batch(3000, [("J2", by_id["J2"]), ("J1", by_id["J1"]),
                                         ("J3", by_id["J3"])]) == [
        "OK", "TOKEN_MISMATCH", "OK"]


def test_ack_success_batch_trim_after_own_success(twin: Twin) -> None:
    # J1's old entry is trimmed after J1 succeeded in the same batch: its new hash and its
    # idx:completed entry go.
    twin.publish(Job("J1"), 900)
    first = twin.reserve(901)
    assert first is not None
    twin.ack_success_batch(902, [first])
    for i in range(98):
        twin.raw("LPUSH", twin.key("completed"), f"OLD{i}")
    twin.publish_many([Job("J1"), Job("J2"), Job("J3"), Job("J4")], 1000)
    leases = dict(twin.reserve_all(2000))
    twin.ack_success_batch(3000, [(i, leases[i]) for i in ("J1", "J2", "J3", "J4")])


def test_ack_success_batch_duplicate_ids(twin: Twin) -> None:
    twin.publish_many([Job("J1"), Job("G1", gid="g")], 1000)
    leases = twin.reserve_all(2000)
    assert twin.ack_success_batch(3000, leases + leases) == ["OK", "OK"] + ["TOKEN_MISMATCH"] * 2


def test_ack_success_batch_of_1000(twin: Twin) -> None:
    twin.enqueue_batch(1000, [Job(f"J{i:04}", gid=[None, "a", "b"][i % 3], group_limit=500)
                              for i in range(1000)])
    leases = twin.reserve_batch(2000, 1000)
    twin.ack_success_batch(3000, leases)


# -- ack_fail_batch ----------------------------------------------------------------------------


def test_ack_fail_batch_retries_and_failures(twin: Twin) -> None:
    jobs = [Job(f"J{m}", max_attempts=m, backoff_ms=100 * m) for m in (0, 1, 2, 3)]
    jobs += [Job(f"G{m}", gid="g", group_limit=4, max_attempts=m, backoff_ms=0) for m in (1, 2)]
    twin.publish_many(jobs, 1000)
    now = 2000
    for _ in range(3):
        leases = twin.reserve_all(now)
        twin.ack_fail_batch(now + 1, [(j, t, f"failed at {now}") for j, t in leases])
        twin.both("promote_delayed", max_promote=100, now_ms_override=now + 500)
        now += 1000


def test_ack_fail_batch_errors_mid_batch(twin: Twin) -> None:
    twin.publish_many(_jobs("J", 4, max_attempts=1) + [Job("K0")], 1000)
    leases = twin.reserve_all(2000)
    twin.raw("ZREM", twin.key("active"), "J2")
    items = [(leases[0][0], leases[0][1], "e"), (leases[1][0], "", "e"),
             (leases[1][0], "bogus", None), (leases[2][0], leases[2][1], "e"),
             (leases[1][0], leases[1][1], ""), (leases[0][0], leases[0][1], "again"),
             (leases[4][0], leases[4][1], None), ("missing", "t", "x")]
    assert _pairs(twin.ack_fail_batch(3000, items), 2) == [
        ["FAILED", ""], ["ERR", "TOKEN_REQUIRED"], ["ERR", "TOKEN_MISMATCH"],
        ["ERR", "NOT_ACTIVE"], ["FAILED", ""], ["ERR", "TOKEN_MISMATCH"], ["RETRY", "8000"],
        ["ERR", "TOKEN_MISMATCH"]]


def test_ack_fail_batch_error_truncation(twin: Twin) -> None:
    twin.publish_many(_jobs("J", 5, max_attempts=5, backoff_ms=0), 1000)
    leases = twin.reserve_all(2000)
    errors = ["x" * 5000, "é" * 3000, "y" * 4096, "", None]
    twin.ack_fail_batch(2001, [(j, t, e) for (j, t), e in zip(leases, errors)])
    assert len(twin.r.hget(twin.key("job:J0"), "last_error")) == 4096
    assert len(twin.r.hget(twin.key("job:J1"), "last_error")) == 4096


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_ack_fail_batch_releases_groups(twin: Twin, limit: int) -> None:
    for i in range(5):
        twin.publish(Job(f"A{i}", gid="a", group_limit=limit, max_attempts=i % 2 + 1), 1000)
        twin.publish(Job(f"B{i}", gid="b", group_limit=limit, backoff_ms=0), 1000)
    leases = twin.reserve_all(2000)
    twin.ack_fail_batch(3000, [(j, t, "e") for j, t in leases])
    twin.reserve_batch(3001, 20)


def test_ack_fail_batch_duplicates_and_reused_ids(twin: Twin) -> None:
    twin.publish(Job("J1", max_attempts=5), 1000)
    twin.publish(Job("J1", max_attempts=5), 1001)  # queued twice
    leases = twin.reserve_all(2000)
    twin.ack_fail_batch(3000, [(j, t, "e") for j, t in leases + leases])


# -- heartbeat_batch ---------------------------------------------------------------------------


def test_heartbeat_batch(twin: Twin) -> None:
    twin.publish_many([Job("J1", timeout_ms=1000), Job("J2", timeout_ms=0),
                       Job("G1", gid="g", timeout_ms=500)], 1000)
    leases = sorted(twin.reserve_all(2000))
    # Twice for the same lease in one batch extends from the first extension (§7 quirk).
    assert _pairs(twin.heartbeat_batch(2500, leases + leases[:1]), 2) == [
        ["OK", "3000"], ["OK", "4000"], ["OK", "122000"], ["OK", "3500"]]
    twin.heartbeat_batch(9000, leases)  # past the deadlines


def test_heartbeat_batch_errors(twin: Twin) -> None:
    twin.publish_many(_jobs("J", 3), 1000)
    leases = twin.reserve_all(2000)
    twin.raw("ZREM", twin.key("active"), "J1")
    items = [leases[0], (leases[0][0], ""), (leases[0][0], "nope"), leases[1], ("gone", "t"),
             leases[2], leases[0]]
    reply = _pairs(twin.heartbeat_batch(2500, items), 2)
    assert [p[0] if p[0] == "OK" else p[1] for p in reply] == [
        "OK", "TOKEN_REQUIRED", "TOKEN_MISMATCH", "NOT_ACTIVE", "TOKEN_MISMATCH", "OK", "OK"]


def test_heartbeat_batch_then_reap(twin: Twin) -> None:
    twin.publish_many(_jobs("J", 3, timeout_ms=1000, max_attempts=1), 1000)
    leases = twin.reserve_all(2000)
    twin.heartbeat_batch(2900, leases[:2])
    twin.both("reap_expired", max_reap=10, now_ms_override=3500)
    twin.assert_same_keys()
    twin.heartbeat_batch(3600, leases)


# -- random mixes ------------------------------------------------------------------------------

GIDS = ["a", "b", "c"]

job_spec = st.fixed_dictionaries({
    "new_id": st.sampled_from([True, True, True, False]),  # False: reuse an id
    "gid": st.sampled_from([None, None] + GIDS),
    "group_limit": st.sampled_from([0, 0, 1, 2, 3, -1]),
    "delay": st.sampled_from([0, 0, 0, 100, 1500]),
    "max_attempts": st.sampled_from([0, 1, 2, 3]),
    "timeout_ms": st.sampled_from([0, 200, 1000, 5000]),
    "backoff_ms": st.sampled_from([0, 50, 700]),
})
lease_pick = st.fixed_dictionaries({
    "pick": st.integers(0, 7),  # counted from the newest lease
    # "stale": a lease that already ended (its id may be leased again by now).
    "token": st.sampled_from(["held"] * 6 + ["empty", "bogus", "stale"]),
    "error": st.sampled_from([None, "", "boom", "é" * 2100]),
})


def _step(name: str, arg: Any) -> Any:
    return st.tuples(st.just(name), arg)


SETUP_STEPS = [
    _step("publish", job_spec), _step("publish", job_spec), _step("publish", job_spec),
    _step("reserve", st.none()), _step("reserve", st.none()),
    _step("promote", st.integers(1, 4)), _step("reap", st.integers(1, 4)),
    _step("pause", st.none()), _step("resume", st.none()), _step("resume", st.none()),
    _step("tweak", st.sampled_from(["inflight0", "inflight1", "stats", "rr"])),
]
BATCH_STEPS = {
    "enqueue_batch": _step("enqueue_batch", st.lists(job_spec, min_size=1, max_size=8)),
    "reserve_batch": _step("reserve_batch", st.integers(1, 8)),
    "ack_success_batch": _step("ack_success_batch", st.lists(lease_pick, min_size=1, max_size=8)),
    "ack_fail_batch": _step("ack_fail_batch", st.lists(lease_pick, min_size=1, max_size=8)),
    "heartbeat_batch": _step("heartbeat_batch", st.lists(lease_pick, min_size=1, max_size=8)),
}


def _mix(focus: str) -> Any:
    """Random runs: some jobs published first, then steps in which the focused batch is
    four times as likely as any other step."""
    others = [s for name, s in BATCH_STEPS.items() if name != focus]
    steps = SETUP_STEPS + others + [BATCH_STEPS[focus]] * 4
    return st.tuples(
        st.booleans(),  # start with a completed list close to its 100 limit
        st.lists(job_spec, min_size=2, max_size=10),
        st.lists(st.tuples(st.integers(0, 800), st.one_of(*steps)), min_size=6, max_size=30),
    )


class RandomRun:
    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.now, self.ids = 1000, 0
        self.live: list[Lease] = []  # leases handed out and not yet acked
        self.ended: list[Lease] = []

    def prefill_completed(self) -> None:
        # The oldest entries reuse ids the run publishes later, so trimming them deletes
        # live jobs' hashes (as the official scripts do).
        t = self.twin
        for i, job_id in enumerate(["J1", "J2", "J3"] + [f"OLD{i}" for i in range(94)]):
            t.raw("LPUSH", t.key("completed"), job_id)
            t.raw("ZADD", t.key("idx:completed"), str(500 + i), job_id)
            t.raw("HSET", t.key(f"job:{job_id}"), "id", job_id, "state", "completed")

    def job(self, spec: dict[str, Any]) -> Job:
        if spec["new_id"] or self.ids == 0:
            self.ids += 1
            job_id = f"J{self.ids}"
        else:
            job_id = f"J{self.now % self.ids + 1}"
        return Job(job_id, gid=spec["gid"], group_limit=spec["group_limit"],
                   due_ms=self.now + spec["delay"] if spec["delay"] else 0,
                   max_attempts=spec["max_attempts"], timeout_ms=spec["timeout_ms"],
                   backoff_ms=spec["backoff_ms"])

    def lease(self, pick: dict[str, Any]) -> tuple[str, str, str | None]:
        pool = self.ended if pick["token"] == "stale" and self.ended else self.live
        job_id, token = pool[-1 - pick["pick"] % len(pool)]
        token = {"empty": "", "bogus": "x" + token[1:]}.get(pick["token"], token)
        return job_id, token, pick["error"]

    def end(self, items: list[tuple], outcomes: list[str]) -> None:
        for item, outcome in zip(items, outcomes):
            lease = (item[0], item[1])
            if outcome != "ERR" and lease in self.live:
                self.live.remove(lease)
                self.ended.append(lease)

    def step(self, kind: str, arg: Any) -> None:
        t, now = self.twin, self.now
        if kind.startswith(("ack", "heartbeat")) and not self.live:
            kind, arg = "reserve_batch", len(arg)  # nothing to ack yet
        if kind == "publish":
            t.publish(self.job(arg), now)
        elif kind == "reserve":
            lease = t.reserve(now)
            if lease:
                self.live.append(lease)
        elif kind in ("promote", "reap"):
            method = {"promote": "promote_delayed", "reap": "reap_expired"}[kind]
            t.both(method, now_ms_override=now, **{f"max_{kind}": arg})
        elif kind in ("pause", "resume"):
            t.both(kind)
        elif kind == "tweak":
            gid = GIDS[now % len(GIDS)]
            if arg.startswith("inflight"):
                t.raw("SET", t.key(f"g:{gid}:inflight"), arg[-1])
            elif arg == "stats":
                t.raw("DEL", t.key("stats"))
            else:
                t.raw("SET", t.key("lane:rr"), str(now % 3))
        elif kind == "enqueue_batch":
            t.enqueue_batch(now, [self.job(spec) for spec in arg])
        elif kind == "reserve_batch":
            leases = t.reserve_batch(now, arg)
            event(f"reserve_batch got {min(len(leases), 3)}+")
            self.live.extend(leases)
        elif kind == "ack_fail_batch":
            items = [self.lease(p) for p in arg]
            reply = t.ack_fail_batch(now, items)
            self.end(items, reply[0::2])
            event(f"ack_fail_batch {sorted(set(reply[0::2]))}")
        else:
            items = [self.lease(p)[:2] for p in arg]
            reply = getattr(t, kind)(now, items)
            if kind == "ack_success_batch":
                self.end(items, ["ERR" if r != "OK" else r for r in reply])
            else:
                reply = reply[1::2]
            event(f"{kind} {sorted(set(r for r in reply if not r.isdigit()))}")


_examples = itertools.count()


def _run_random(oracle_on_ours: Any, oracle: Any, r: redis.Redis, r2: redis.Redis, qname: str,
                run: tuple[bool, list, list]) -> None:
    prefill, first_jobs, steps = run
    queue = f"{qname}x{next(_examples)}"
    twin = Twin(oracle_on_ours, oracle, r, r2, queue)
    try:
        random_run = RandomRun(twin)
        if prefill:
            random_run.prefill_completed()
        for spec in first_jobs:
            twin.publish(random_run.job(spec), random_run.now)
        for advance, (kind, arg) in steps:
            random_run.now += advance
            random_run.step(kind, arg)
        twin.assert_same_keys()
    finally:
        prefix = "{" + queue + "}"
        delete_prefixed(r, prefix)
        delete_prefixed(r2, prefix)


def _random_test(focus: str) -> Any:
    @settings(max_examples=80, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(run=_mix(focus))
    def test(oracle_on_ours: Any, oracle: Any, r: redis.Redis, r2: redis.Redis, qname: str,
             run: tuple[bool, list, list]) -> None:
        _run_random(oracle_on_ours, oracle, r, r2, qname, run)

    test.__name__ = f"test_random_{focus}"
    return test


test_random_enqueue_batch = _random_test("enqueue_batch")
test_random_reserve_batch = _random_test("reserve_batch")
test_random_ack_success_batch = _random_test("ack_success_batch")
test_random_ack_fail_batch = _random_test("ack_fail_batch")
test_random_heartbeat_batch = _random_test("heartbeat_batch")

