"""release_batch / ``Client.release_many``: leases given back as if never reserved.

The key property: the same queue is built on two databases with the official client
(``oracle_on_ours`` on ours, ``oracle`` on the oracle's), then on OUR database jobs are
reserved with omniq_fast's ``reserve_many`` and all released with ``release_many``, while the
oracle's database never reserves them. Both keyspaces must then be the same, except for what
``omniq_fast/lua/release_batch.lua`` documents as not restored:

* ``lane:rr`` and ``lease:seq``;
* the scores of ``groups:ready`` (its members must match);
* stats ``last_activity_ms`` (now of the release) and ``last_reserve_ms``; a counter field
  reserve created stays at ``"0"`` (the oracle has none, which reads as 0);
* a group's ``inflight`` key reserve created stays at ``"0"`` (the oracle has none);
* for a released job that was not a first start published ready: ``updated_ms`` and its
  ``idx:wait`` score (the time it entered wait is not stored), and for a job that had run
  before, ``last_started_ms``. Those get the documented values, checked here.

Everything else (job hashes field by field and in field order, lane order, idx zsets, the
stats counters, inflight values, active, delayed, failed...) must match exactly. Once the
not-restored keys are copied over from the oracle, reserving everything again hands out on
both databases exactly the same jobs, leases and keyspace.
"""

from __future__ import annotations

import dataclasses
import itertools
from types import ModuleType
from typing import Any, Iterator, Optional

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniq_fast import Client, JobResult, ReservedJob
from harness import call_official, plain_official
from support import delete_prefixed, run_script, snapshot

T = 1_700_000_000_000
LIMITS = {"a": 1, "b": 2, "c": 3}
COUNTERS = (b"waiting", b"group_waiting", b"waiting_total", b"active", b"delayed", b"failed",
            b"completed_kept", b"groups_ready")
NOT_RESTORED = ("lane:rr", "lease:seq")


@pytest.fixture
def ours(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    with shell(redis_url, _core=core) as client:
        yield client


def same_job(ours: ReservedJob, theirs: Any) -> bool:
    return all(getattr(ours, f) == getattr(theirs, f) for f in ReservedJob.__dataclass_fields__)


@dataclasses.dataclass
class Spec:
    """One job of a mix. kind: "ready" (published ready), "delayed" (published with a due
    time, then promoted), "future" (still delayed), "retried" (one failed attempt, then
    promoted), "refailed" (failed for good, then retry_failed), "held" (reserved on both
    databases during setup and kept)."""

    job_id: str
    gid: Optional[str] = None
    kind: str = "ready"

    def publish_kwargs(self, now: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            payload={"id": self.job_id}, job_id=self.job_id, gid=self.gid,
            group_limit=LIMITS.get(self.gid or "", 0), backoff_ms=10,
            max_attempts=1 if self.kind == "refailed" else 3,
        )
        if self.kind == "delayed":
            kwargs["due_ms"] = now + 50
        elif self.kind == "future":
            kwargs["due_ms"] = now + 10**9
        return kwargs


class Queue:
    """One queue on two databases, set up with the official client on both; then omniq_fast
    reserves and releases on ours (``r``) only."""

    def __init__(self, client: Client, ours_official: Any, oracle: Any, r: redis.Redis,
                 r2: redis.Redis, name: str) -> None:
        self.client, self.sides, self.oracle = client, (ours_official, oracle), oracle
        self.r, self.r2, self.name = r, r2, name
        self.prefix = "{" + name + "}"
        self.reserved_at: dict[str, int] = {}  # job id -> when ours last reserved it
        # Ours' stats last_activity_ms / last_reserve_ms where they differ from the oracle's
        # (None: the same), and when ours last released.
        self.activity: Optional[int] = None
        self.last_reserve: Optional[int] = None
        self.released_now = 0
        self.nows: set[float] = set()  # when ours reserved or released

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    def key(self, suffix: str) -> bytes:
        return f"{self.prefix}:{suffix}".encode()

    def both(self, method: str, **kwargs: Any) -> Any:
        results = [call_official(lambda c=c: getattr(c, method)(queue=self.name, **kwargs))
                   for c in self.sides]
        assert plain_official(results[0]) == plain_official(results[1]), f"setup {method} differs"
        return results[1]

    def both_reserve_all(self, now: int) -> list[Any]:
        out = []
        while True:
            job = self.both("reserve", now_ms_override=now)
            if job is None or not hasattr(job, "lease_token"):
                return out
            out.append(job)

    def build(self, specs: list[Spec]) -> None:
        """The mix, the same on both databases: retried/refailed/held jobs first (at T),
        then the others (at T+1000), then promote (at T+1100)."""
        kinds = {s.job_id: s.kind for s in specs}
        early = [s for s in specs if s.kind in ("retried", "refailed", "held")]
        for spec in early:
            self.both("publish", now_ms_override=T, **spec.publish_kwargs(T))
        for job in self.both_reserve_all(T + 1):
            if kinds[job.job_id] in ("retried", "refailed"):
                self.both("ack_fail", job_id=job.job_id, lease_token=job.lease_token,
                          error="boom", now_ms_override=T + 2)
                if kinds[job.job_id] == "refailed":
                    self.both("retry_failed", job_id=job.job_id, now_ms_override=T + 3)
        for spec in specs:
            if spec not in early:
                self.both("publish", now_ms_override=T + 1000, **spec.publish_kwargs(T + 1000))
        self.both("promote_delayed", max_promote=1000, now_ms_override=T + 1100)

    # -- ours only -----------------------------------------------------------------------------

    def reserve(self, n: int, now: int) -> list[ReservedJob]:
        got = self.client.reserve_many(self.name, n, now_ms_override=now)
        assert isinstance(got, list)
        for job in got:
            self.reserved_at[job.job_id] = now
        if got:
            self.activity = self.last_reserve = now
        self.nows.add(float(now))
        return got

    def release(self, leases: list[Any], now: int) -> list[JobResult]:
        results = self.client.release_many(self.name, leases, now_ms_override=now)
        if any(res.status == "OK" for res in results):
            self.activity = self.released_now = now
        self.nows.add(float(now))
        return results

    def ack_both(self, kept: list[ReservedJob], theirs: list[Any], now: int) -> None:
        """Ack the same leases on both databases."""
        assert [j.job_id for j in kept] == [j.job_id for j in theirs]
        results = self.client.ack_success_many(self.name, kept, now_ms_override=now)
        assert _oks(results) == ["OK"] * len(kept)
        for job in theirs:
            self.oracle.ack_success(queue=self.name, job_id=job.job_id,
                                    lease_token=job.lease_token, now_ms_override=now)
        if kept:
            self.activity = None

    # -- the comparison ------------------------------------------------------------------------

    def assert_restored(self, released: set[str], *, exact_ready: bool = False) -> None:
        """Both keyspaces are the same but for what release_batch.lua documents. ``released``:
        the ids ours released (their documented differences are checked while they still
        wait); ``exact_ready``: groups:ready scores too (after sync_not_restored)."""
        ours, theirs = snapshot(self.r, self.prefix), snapshot(self.r2, self.prefix)
        for snap in (ours, theirs):
            for suffix in NOT_RESTORED:
                snap.pop(self.key(suffix), None)

        # groups:ready: the same members; a score is the oracle's or one of ours' nows.
        ready = [snap.pop(self.key("groups:ready"), (None, [], -1))[1] for snap in (ours, theirs)]
        if exact_ready:
            assert ready[0] == ready[1]
        else:
            theirs_at = dict(ready[1])
            assert sorted(theirs_at) == sorted(m for m, _ in ready[0]), ready
            for gid, score in ready[0]:
                assert score == theirs_at[gid] or score in self.nows, (gid, score)

        # stats: counters (missing reads as 0), then the stamps.
        stats = [snap.pop(self.key("stats"), (None, {}, -1))[1] for snap in (ours, theirs)]
        for field in COUNTERS:
            assert int(stats[0].get(field, 0)) == int(stats[1].get(field, 0)), field
            if field not in stats[1]:
                assert stats[0].get(field, b"0") == b"0", field
        stamps = [set(fields) - set(COUNTERS) - {b"last_reserve_ms"} for fields in stats]
        assert stamps[0] == stamps[1]
        want_activity = (stats[1].get(b"last_activity_ms") if self.activity is None
                         else str(self.activity).encode())
        assert stats[0].get(b"last_activity_ms") == want_activity
        want_reserve = (stats[1].get(b"last_reserve_ms") if self.last_reserve is None
                        else str(self.last_reserve).encode())
        assert stats[0].get(b"last_reserve_ms") == want_reserve
        for field in (b"last_enqueue_ms", b"last_finish_ms"):
            assert stats[0].get(field) == stats[1].get(field), field

        # A group's inflight key reserve created is left at "0".
        for key in [k for k in ours if k.endswith(b":inflight") and k not in theirs]:
            assert ours.pop(key) == ("string", b"0", -1), key

        # Released jobs still waiting: the documented values, then the oracle's for the rest.
        idx = [dict(snap.get(self.key("idx:wait"), (None, [], -1))[1]) for snap in (ours, theirs)]
        for job_id in sorted(released):
            jk = self.key("job:" + job_id)
            mine, their = ours[jk][1], theirs[jk][1]
            if mine.get(b"state") != b"wait":
                continue
            first_start = their[b"attempt"] == b"0" and their[b"first_started_ms"] == b""
            if first_start and b"due_ms" not in their:
                continue  # published ready: exact
            mine = dict(mine)
            if first_start:  # published with a due time, promoted: entered wait at queued_ms
                entered = mine[b"queued_ms"]
            else:  # had run before: entered wait now; this lease's start is kept
                entered = str(self.released_now).encode()
                assert mine[b"last_started_ms"] == str(self.reserved_at[job_id]).encode()
                mine[b"last_started_ms"] = their[b"last_started_ms"]
            assert mine[b"updated_ms"] == entered, job_id
            mine[b"updated_ms"] = their[b"updated_ms"]
            assert idx[0][job_id.encode()] == float(entered), job_id
            idx[0][job_id.encode()] = idx[1][job_id.encode()]
            ours[jk] = (ours[jk][0], mine, ours[jk][2])
        assert idx[0] == idx[1]
        for snap in (ours, theirs):
            snap.pop(self.key("idx:wait"), None)

        diff = {k: (ours.get(k), theirs.get(k)) for k in sorted(ours.keys() | theirs.keys())
                if ours.get(k) != theirs.get(k)}
        assert not diff, f"keyspaces differ (ours, oracle): {diff}"
        # Hash fields in the same order too (a listpack keeps insertion order).
        for key, (kind, value, _) in ours.items():
            if kind == "hash":
                assert list(value) == list(theirs[key][1]), key

    def sync_not_restored(self) -> None:
        """Copy over from the oracle what release cannot restore (see the module doc)."""
        for suffix in NOT_RESTORED:
            value = self.r2.get(self.key(suffix))
            if value is None:
                self.r.delete(self.key(suffix))
            else:
                self.r.set(self.key(suffix), value)
        ready = self.r2.zrange(self.key("groups:ready"), 0, -1, withscores=True)
        self.r.delete(self.key("groups:ready"))
        if ready:
            self.r.zadd(self.key("groups:ready"), {m: s for m, s in ready})

    def assert_next_reserves_match(self, now: int) -> list[ReservedJob]:
        """After sync_not_restored: reserving everything on both hands out the same."""
        self.sync_not_restored()
        theirs = []
        while True:
            job = call_official(lambda: self.oracle.reserve(queue=self.name, now_ms_override=now))
            if job is None or not hasattr(job, "lease_token"):
                break
            theirs.append(job)
        got = self.client.reserve_many(self.name, 1000, now_ms_override=now)
        assert isinstance(got, list)
        if got:
            self.activity = self.last_reserve = None  # both reserved at now
        assert [(j.job_id, j.attempt) for j in got] == [(j.job_id, j.attempt) for j in theirs]
        assert all(same_job(a, b) for a, b in zip(got, theirs))
        return got

    def assert_consistent(self) -> None:
        """Ours' counters agree with its lanes (a check that needs no oracle)."""
        r, key = self.r, self.key
        stats = {k: int(v) for k, v in r.hgetall(key("stats")).items() if k in COUNTERS}
        wait = r.lrange(key("wait"), 0, -1)
        lists = {k.decode().split(":")[-2]: r.lrange(k, 0, -1)
                 for k in r.scan_iter(match=self.prefix + ":g:*:wait")}
        active = r.zrange(key("active"), 0, -1)
        assert stats.get(b"waiting", 0) == len(wait)
        assert stats.get(b"group_waiting", 0) == sum(len(v) for v in lists.values())
        assert stats.get(b"waiting_total", 0) == len(wait) + sum(len(v) for v in lists.values())
        assert stats.get(b"active", 0) == len(active)
        assert stats.get(b"groups_ready", 0) == r.zcard(key("groups:ready"))
        queued = set(wait).union(*lists.values())
        assert set(r.zrange(key("idx:wait"), 0, -1)) == queued
        assert set(r.zrange(key("idx:active"), 0, -1)) == set(active)
        for job_id in queued:
            assert r.hget(key("job:" + job_id.decode()), "state") == b"wait"
        running: dict[str, int] = {}
        for job_id in active:
            gid = r.hget(key("job:" + job_id.decode()), "gid")
            if gid:
                running[gid.decode()] = running.get(gid.decode(), 0) + 1
        ready = {m.decode() for m in r.zrange(key("groups:ready"), 0, -1)}
        for gid in set(lists) | set(running):
            assert int(r.get(key(f"g:{gid}:inflight")) or 0) == running.get(gid, 0), gid
            if lists.get(gid) and running.get(gid, 0) < LIMITS.get(gid, 1):
                assert gid in ready, gid


@pytest.fixture
def queue(ours: Client, oracle_on_ours: Any, oracle: Any, r: redis.Redis, r2: redis.Redis,
          qname: str) -> Queue:
    return Queue(ours, oracle_on_ours, oracle, r, r2, qname)


def _oks(results: list[JobResult]) -> list[str]:
    return [str(res.reason) if res.status == "ERR" else res.status for res in results]


MIX = (
    [Spec(f"R{i}", gid, "retried") for i, gid in enumerate([None, "a", "b", "c", None])]
    + [Spec("F0", None, "refailed"), Spec("F1", "c", "refailed"), Spec("H0", "b", "held")]
    + [Spec(f"U{i}") for i in range(4)]
    + [Spec(f"A{i}", "a") for i in range(3)]
    + [Spec(f"B{i}", "b") for i in range(4)]
    + [Spec(f"C{i}", "c") for i in range(5)]
    + [Spec("D0", None, "delayed"), Spec("D1", "b", "delayed"), Spec("D2", "a", "delayed"),
       Spec("X0", None, "future"), Spec("X1", "c", "future")]
)


# -- the key property --------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[1], [3], [2, 5, 1], [7, 7], [40]])
def test_reserve_then_release_all_restores_the_queue(queue: Queue, sizes: list[int]) -> None:
    queue.build(MIX)
    leases: list[ReservedJob] = []
    for i, size in enumerate(sizes):
        leases += queue.reserve(size, T + 2000 + i)
    assert leases
    results = queue.release(leases, T + 3000)
    assert results == [JobResult(job.job_id, "OK") for job in leases]
    queue.assert_restored({j.job_id for j in leases})
    queue.assert_consistent()
    again = queue.assert_next_reserves_match(T + 4000)
    queue.assert_restored(set(), exact_ready=True)
    # Released first starts come back as attempt 1; retried jobs as the oracle's next attempt.
    attempts = {j.job_id: j.attempt for j in again}
    for job in leases:
        if job.job_id in attempts:
            assert attempts[job.job_id] == job.attempt


def test_first_starts_published_ready_are_exact(queue: Queue) -> None:
    queue.build([Spec(f"U{i}") for i in range(3)] + [Spec(f"B{i}", "b") for i in range(3)])
    leases = queue.reserve(6, T + 2000)
    assert len(leases) == 5  # b's limit of 2 keeps B2 back
    assert _oks(queue.release(leases, T + 3000)) == ["OK"] * 5
    ours, theirs = snapshot(queue.r, queue.prefix), snapshot(queue.r2, queue.prefix)
    for name in ["wait", "g:b:wait", "idx:wait"] + [f"job:{j}" for j in ("U0", "U1", "U2", "B0",
                                                                         "B1", "B2")]:
        assert ours[queue.key(name)] == theirs[queue.key(name)], name
    assert queue.r.lrange(queue.key("wait"), 0, -1) == [b"U0", b"U1", b"U2"]
    assert queue.r.lrange(queue.key("g:b:wait"), 0, -1) == [b"B0", b"B1", b"B2"]
    for key in ("active", "idx:active"):
        assert queue.key(key) not in ours
    queue.assert_restored({j.job_id for j in leases})


def test_released_jobs_are_handed_out_again_in_order(queue: Queue, ours: Client,
                                                     redis_url: str, core: ModuleType,
                                                     shell: Any) -> None:
    # A consumer prefetches and shuts down; the next consumer gets exactly what the oracle's
    # first reserves give (ungrouped and one group: no lane:rr or groups:ready score matters).
    queue.build([Spec(f"U{i}") for i in range(5)] + [Spec(f"C{i}", "c") for i in range(4)])
    leases = queue.reserve(6, T + 2000)
    queue.release(leases, T + 3000)
    with shell(redis_url, _core=core) as other:
        got = other.reserve_many(queue.name, 6, now_ms_override=T + 4000)
    assert isinstance(got, list)
    theirs = [queue.oracle.reserve(queue=queue.name, now_ms_override=T + 4000) for _ in got]
    assert [(j.job_id, j.attempt, j.payload, j.gid, j.lock_until_ms) for j in got] == [
        (j.job_id, j.attempt, j.payload, j.gid, j.lock_until_ms) for j in theirs]
    assert [j.job_id for j in got] == [j.job_id for j in leases]
    assert {j.attempt for j in got} == {1}


def test_release_does_not_use_up_an_attempt(queue: Queue) -> None:
    queue.both("publish", now_ms_override=T, payload={}, job_id="J", max_attempts=1)
    for i in range(3):
        (lease,) = queue.reserve(1, T + 10 + i)
        assert lease.attempt == 1
        assert _oks(queue.release([lease], T + 20 + i)) == ["OK"]
    (lease,) = queue.reserve(1, T + 100)
    assert _oks(queue.client.ack_fail_many(queue.name, [lease], ["x"],
                                           now_ms_override=T + 101)) == ["FAILED"]


# -- partial releases --------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 4, 9])
def test_release_the_tail_then_ack_the_rest(queue: Queue, keep: int) -> None:
    # Ours reserves 12 and gives back all but the first `keep`; the oracle reserves only
    # those (same now, so the same leases). Both ack them; the keyspaces must match.
    queue.build(MIX)
    leases = queue.reserve(12, T + 2000)
    kept = leases[:keep]
    theirs = [queue.oracle.reserve(queue=queue.name, now_ms_override=T + 2000)
              for _ in range(keep)]
    assert all(same_job(a, b) for a, b in zip(kept, theirs))
    assert _oks(queue.release(leases[keep:], T + 3000)) == ["OK"] * (12 - keep)
    queue.assert_consistent()
    queue.ack_both(kept, theirs, T + 3001)
    queue.assert_restored({j.job_id for j in leases[keep:]})
    queue.assert_consistent()
    queue.assert_next_reserves_match(T + 4000)
    queue.assert_restored(set(), exact_ready=True)


def test_release_some_keep_others(queue: Queue) -> None:
    queue.build([Spec(f"U{i}") for i in range(6)] + [Spec(f"B{i}", "b") for i in range(4)])
    leases = queue.reserve(8, T + 2000)
    order = [j.job_id for j in leases]
    assert order == ["B0", "U0", "B1", "U1", "U2", "U3", "U4", "U5"]
    by_id = {j.job_id: j for j in leases}
    give_back = [by_id[i] for i in ("B0", "U1", "U4")]  # in reservation order
    keep = [j for j in leases if j not in give_back]
    assert _oks(queue.release(give_back, T + 3000)) == ["OK"] * 3
    # Released jobs are first in their lanes, in their order, ahead of those never taken.
    assert queue.r.lrange(queue.key("wait"), 0, -1) == [b"U1", b"U4"]
    assert queue.r.lrange(queue.key("g:b:wait"), 0, -1) == [b"B0", b"B2", b"B3"]
    assert queue.r.get(queue.key("g:b:inflight")) == b"1"
    assert queue.r.zscore(queue.key("groups:ready"), "b") is not None
    queue.assert_consistent()
    # The released leases are dead; the kept ones still work.
    assert _oks(queue.client.ack_success_many(queue.name, give_back, now_ms_override=T + 3001)) == [
        "TOKEN_MISMATCH"] * 3
    assert _oks(queue.client.heartbeat_many(queue.name, give_back, now_ms_override=T + 3001)) == [
        "TOKEN_MISMATCH"] * 3
    assert _oks(queue.client.ack_success_many(queue.name, keep[:3], now_ms_override=T + 3002)) == [
        "OK"] * 3
    results = queue.client.ack_fail_many(queue.name, keep[3:], ["x"] * 2, now_ms_override=T + 3003)
    assert [res.status for res in results] == ["RETRY"] * 2
    queue.assert_consistent()
    again = queue.reserve(10, T + 4000)
    assert [(j.job_id, j.attempt) for j in again] == [
        ("B0", 1), ("U1", 1), ("B2", 1), ("U4", 1)]
    queue.assert_consistent()
    for job_id in ("B0", "U1", "U4"):
        fields = queue.r.hgetall(queue.key("job:" + job_id))
        assert fields[b"first_started_ms"] == fields[b"last_started_ms"] == str(T + 4000).encode()


# -- refusals ----------------------------------------------------------------------------------


def _ack_reason(result: Any) -> str:
    prefix = "ACK_SUCCESS failed: "
    assert isinstance(result, RuntimeError) and str(result).startswith(prefix), (
        plain_official(result))
    return str(result)[len(prefix):]


def test_lease_errors_match_ack_success(queue: Queue) -> None:
    # Both databases hold the same leases (official reserves: the same tokens); ours' release
    # refuses each bad one with the reason the official ack_success gives for it.
    for i in range(5):
        queue.both("publish", now_ms_override=T, payload={"i": i}, job_id=f"J{i}")
    jobs = queue.both_reserve_all(T + 1)
    queue.both("ack_success", job_id="J1", lease_token=jobs[1].lease_token, now_ms_override=T + 2)
    for conn in (queue.r, queue.r2):
        conn.zrem(queue.key("active"), "J2")  # a state no script makes: token good, not active
    bad = [("J0", ""), ("J0", "x" + jobs[0].lease_token[1:]), ("J1", jobs[1].lease_token),
           ("J2", jobs[2].lease_token), ("nope", "t")]
    results = queue.release(bad, T + 3)
    theirs = [_ack_reason(call_official(lambda j=j, t=t: queue.oracle.ack_success(
        queue=queue.name, job_id=j, lease_token=t, now_ms_override=T + 3))) for j, t in bad]
    assert _oks(results) == theirs == [
        "TOKEN_REQUIRED", "TOKEN_MISMATCH", "TOKEN_MISMATCH", "NOT_ACTIVE", "TOKEN_MISMATCH"]
    assert [res.job_id for res in results] == [j for j, _ in bad]
    ours, oracle = snapshot(queue.r, queue.prefix), snapshot(queue.r2, queue.prefix)
    assert ours == oracle  # refusals change nothing

    # In a batch with good leases, refusals leave the others' releases alone. A lease given
    # twice is released at its later position (the batch works from the end).
    lease3, lease4 = (jobs[3].job_id, jobs[3].lease_token), (jobs[4].job_id, jobs[4].lease_token)
    results = queue.release([lease3, ("J0", ""), lease4, lease3], T + 4)
    assert _oks(results) == ["TOKEN_MISMATCH", "TOKEN_REQUIRED", "OK", "OK"]
    assert queue.r.lrange(queue.key("wait"), 0, -1) == [b"J4", b"J3"]
    fields = queue.r.hgetall(queue.key("job:J3"))
    assert fields[b"attempt"] == b"0" and fields[b"state"] == b"wait"
    assert b"lease_token" not in fields and b"lock_until_ms" not in fields


def test_release_after_reap_or_ack_is_refused(queue: Queue) -> None:
    for i in range(3):
        queue.both("publish", now_ms_override=T, payload={}, job_id=f"J{i}", timeout_ms=100)
    leases = queue.reserve(3, T + 1)
    queue.client.ack_success_many(queue.name, leases[:1], now_ms_override=T + 2)
    queue.client.reap_expired(queue.name, now_ms_override=T + 500)
    before = snapshot(queue.r, queue.prefix)
    assert _oks(queue.release(leases, T + 600)) == ["TOKEN_MISMATCH"] * 3
    assert snapshot(queue.r, queue.prefix) == before


def test_argument_checks(queue: Queue, r: redis.Redis) -> None:
    anchor = queue.prefix + ":meta"

    def run(*argv: Any) -> Any:
        reply = run_script(r, "release_batch", anchor, *argv)
        return [x.decode() for x in reply]

    assert run(T, 1001) == ["ERR", "BATCH_TOO_LARGE", "1000"]
    assert run(T, 1001, *(["x"] * 2002)) == ["ERR", "BATCH_TOO_LARGE", "1000"]
    assert run(T, 2, "J", "t") == ["ERR", "BAD_ARGS"]
    assert run(T, 1, "J", "t", "extra") == ["ERR", "BAD_ARGS"]
    for bad in ("-1", "1.5", "x", ""):
        assert run(T, bad) == ["ERR", "BAD_ARGS"]
    assert run(T) == ["ERR", "BAD_ARGS"]
    assert run(T, 0) == []
    assert queue.client.release_many(queue.name, []) == []
    assert snapshot(r, queue.prefix) == {}
    with pytest.raises(ValueError):
        queue.client.release_many("bad name", [("J", "t")])


def test_release_many_past_one_script_call(ours: Client, r: redis.Redis, qname: str) -> None:
    # 2500 leases take three calls; they go from the last 1000 to the first, so every lane
    # gets back its order.
    jobs = [{"i": i} for i in range(2500)]
    ids = ours.publish_many(qname, jobs[:1500], now_ms_override=T)
    for i in range(1500, 2500):
        ids.append(ours.publish(qname, jobs[i], gid="g", group_limit=5000, now_ms_override=T))
    prefix = "{" + qname + "}"
    before = snapshot(r, prefix)
    leases: list[Any] = []
    for i in range(3):
        got = ours.reserve_many(qname, 1000, now_ms_override=T + 10 + i)
        assert isinstance(got, list)
        leases += got
    assert len(leases) == 2500
    results = ours.release_many(qname, leases, now_ms_override=T + 100)
    assert [res.job_id for res in results] == [j.job_id for j in leases]
    assert {res.status for res in results} == {"OK"}
    after = snapshot(r, prefix)
    for snap in (before, after):
        for suffix in ("lane:rr", "lease:seq", "stats", "groups:ready", "g:g:inflight"):
            snap.pop(f"{prefix}:{suffix}".encode(), None)
    assert after == before
    assert r.get(prefix + ":g:g:inflight") == b"0"
    assert r.zrange(prefix + ":groups:ready", 0, -1) == [b"g"]


# -- random mixes ------------------------------------------------------------------------------

spec_strategy = st.tuples(
    st.sampled_from([None, None, "a", "b", "c"]),
    st.sampled_from(["ready"] * 4 + ["delayed", "future", "retried", "refailed", "held"]),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.lists(spec_strategy, min_size=1, max_size=14),
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    keep=st.one_of(st.just(0), st.integers(0, 10)),
)
def test_random_mixes(ours: Client, oracle_on_ours: Any, oracle: Any, r: redis.Redis,
                      r2: redis.Redis, qname: str, specs: list[tuple[Optional[str], str]],
                      sizes: list[int], keep: int) -> None:
    # Ours reserves in batches of `sizes`, keeps the first `keep` leases and releases the
    # rest; the oracle reserves only the kept ones (at the same nows: the same leases).
    name = f"{qname}x{next(_examples)}"
    queue = Queue(ours, oracle_on_ours, oracle, r, r2, name)
    try:
        queue.build([Spec(f"J{i}", gid, kind) for i, (gid, kind) in enumerate(specs)])
        leases: list[ReservedJob] = []
        theirs: list[Any] = []
        for i, size in enumerate(sizes):
            now = T + 2000 + i
            got = queue.reserve(size, now)
            for _ in range(min(len(got), keep - len(theirs))):
                theirs.append(queue.oracle.reserve(queue=name, now_ms_override=now))
            leases += got
        kept, released = leases[: len(theirs)], leases[len(theirs):]
        assert all(same_job(a, b) for a, b in zip(kept, theirs))
        assert _oks(queue.release(released, T + 3000)) == ["OK"] * len(released)
        queue.assert_consistent()
        queue.ack_both(kept, theirs, T + 3001)
        queue.assert_restored({j.job_id for j in released})
        queue.assert_consistent()
        queue.assert_next_reserves_match(T + 4000)
        queue.assert_restored(set(), exact_ready=True)
    finally:
        delete_prefixed(r, "{" + name + "}")
        delete_prefixed(r2, "{" + name + "}")


_examples = itertools.count()
