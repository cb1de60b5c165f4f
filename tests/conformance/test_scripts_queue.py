"""Our queue scripts against the official SDK, keyspace for keyspace (PROTOCOL.md §5).

Every step runs one operation twice: through the official ``omniq`` client on the oracle
database, and through our Lua script (run directly with EVAL) on ours. The official client is
only driven through its public methods; its Redis connection is wrapped to record the ARGV it
sent and the raw reply it got, so each step checks three things: we build the same ARGV, our
script gives the same raw reply, and both databases hold the same keys afterwards.
"""

# Shell-independent: our Lua runs with EVAL, bypassing both clients (the shells send these
# same scripts; their calls are compared on both shells in test_random_sequences, test_release,
# test_bulk and test_interop).
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness import assert_same_snapshots, decoded, payload_json
from support import delete_prefixed, run_script, snapshot


@dataclass
class Unparsed:
    """The official client ran the script but could not parse its reply (or raised)."""

    error: str


@dataclass
class Call:
    """One EVALSHA the official client made: its ARGV and raw reply."""

    argv: tuple[str, ...]
    reply: Any


class Pair:
    """One queue on two databases: the official client drives one, our scripts the other."""

    def __init__(self, oracle: Any, r: redis.Redis, r2: redis.Redis, queue: str) -> None:
        self.oracle, self.r, self.r2, self.queue = oracle, r, r2, queue
        self.anchor = "{" + queue + "}:meta"
        self.calls: list[Call] = []
        conn = oracle._client._ops.r
        plain = conn.execute_command

        def recording(*args: Any, **options: Any) -> Any:
            reply = plain(*args, **options)
            if str(args[0]).upper() in ("EVALSHA", "EVAL"):
                numkeys = int(args[2])
                self.calls.append(Call(tuple(str(a) for a in args[3 + numkeys:]), reply))
            return reply

        conn.execute_command = recording
        self._restore = lambda: setattr(conn, "execute_command", plain)

    def close(self) -> None:
        self._restore()

    def __repr__(self) -> str:
        return f"<Pair {self.queue}>"

    def snapshots(self) -> tuple[dict, dict]:
        prefix = "{" + self.queue + "}"
        return snapshot(self.r, prefix), snapshot(self.r2, prefix)

    def assert_same_keys(self) -> None:
        assert_same_snapshots(*self.snapshots())

    def step(
        self, official: Callable[[], Any], name: str, argv: list[Any], check: bool = True
    ) -> tuple[Any, Any]:
        """Run one operation on both sides; return (our raw reply, the official result).

        The official result is what its method returned, or the RuntimeError it raised.
        """
        before = len(self.calls)
        try:
            result: Any = official()
        except RuntimeError as exc:
            result = exc
        except Exception as exc:
            # Kept as text only: a traceback through the official package would print its
            # (GPL) source lines, which this MIT project must not take in.
            result = Unparsed(f"{type(exc).__name__}: {exc}")
        if len(self.calls) != before + 1:
            raise AssertionError(f"the official client made no single script call: {result}")
        call = self.calls[-1]
        ours_argv = tuple(str(a) for a in argv)
        assert ours_argv == call.argv, f"{name}: ARGV differs: {ours_argv} vs {call.argv}"
        reply = decoded(run_script(self.r, name, self.anchor, *ours_argv))
        assert reply == call.reply, f"{name}: reply differs: {reply!r} vs {call.reply!r}"
        if check:
            self.assert_same_keys()
        return reply, result

    # -- the nine operations, each with the ARGV PROTOCOL.md §5 gives it ------------------

    def publish(
        self,
        job_id: str,
        now: int,
        payload: Any = None,
        *,
        max_attempts: int = 3,
        timeout_ms: int = 30000,
        backoff_ms: int = 5000,
        due_ms: int = 0,
        gid: str | None = None,
        group_limit: int = 0,
        check: bool = True,
    ) -> Any:
        payload = {"id": job_id} if payload is None else payload
        reply, result = self.step(
            lambda: self.oracle.publish(
                queue=self.queue, payload=payload, job_id=job_id, max_attempts=max_attempts,
                timeout_ms=timeout_ms, backoff_ms=backoff_ms, due_ms=due_ms, gid=gid,
                group_limit=group_limit, now_ms_override=now,
            ),
            "enqueue",
            # The official client sends a negative group_limit as 0.
            [job_id, payload_json(payload), max_attempts, timeout_ms, backoff_ms, now,
             due_ms, gid or "", max(group_limit, 0)],
            check,
        )
        assert reply == ["OK", job_id] and result == job_id
        return reply

    def publish_duplicate(self, job_id: str, now: int, **options: Any) -> None:
        """Publish an id that exists, on our side only: the documented divergence (README
        "Deliberate divergences"). The official script overwrites the job and queues it
        again; ours answers DUPLICATE and leaves every key as it was. The oracle is not
        called, so both sides stay comparable for the steps after."""
        prefix = "{" + self.queue + "}"
        before = snapshot(self.r, prefix)
        argv = [job_id, payload_json({"id": job_id}), options.get("max_attempts", 3),
                options.get("timeout_ms", 30000), options.get("backoff_ms", 5000), now,
                options.get("due_ms", 0), options.get("gid") or "",
                options.get("group_limit", 0)]  # fmt: skip
        assert decoded(run_script(self.r, "enqueue", self.anchor, *argv)) == ["DUPLICATE", job_id]
        assert snapshot(self.r, prefix) == before
        self.assert_same_keys()

    def reserve(self, now: int, check: bool = True) -> Any:
        reply, result = self.step(
            lambda: self.oracle.reserve(queue=self.queue, now_ms_override=now),
            "reserve", [now], check,
        )
        if isinstance(result, Unparsed):
            pass
        elif reply[0] == "JOB":
            _, job_id, payload, lock_until, attempt, max_attempts, gid, token = reply
            assert (result.job_id, result.payload, result.lock_until_ms, result.attempt,
                    result.max_attempts, result.gid, result.lease_token) == (
                job_id, payload, int(lock_until), int(attempt), int(max_attempts), gid, token)
        elif reply == ["EMPTY"]:
            assert result is None
        else:
            assert reply == ["PAUSED"] and result.status == "PAUSED"
        return reply

    def _lease_call(self, method: str, script: str, job_id: str, token: str, now: int,
                    **extra: Any) -> tuple[Any, Any]:
        # The official client sends no error argument for None or "".
        argv = [job_id, now, token] + ([extra["error"]] if extra.get("error") else [])
        return self.step(
            lambda: getattr(self.oracle, method)(
                queue=self.queue, job_id=job_id, lease_token=token, now_ms_override=now, **extra
            ),
            script, argv,
        )

    @staticmethod
    def _check_error(reply: Any, result: Any, label: str) -> None:
        assert reply[0] == "ERR" and isinstance(result, RuntimeError)
        assert str(result) == f"{label} failed: {reply[1]}"

    def heartbeat(self, job_id: str, token: str, now: int) -> Any:
        reply, result = self._lease_call("heartbeat", "heartbeat", job_id, token, now)
        if reply[0] == "OK":
            assert isinstance(result, Unparsed) or result == int(reply[1])
        else:
            self._check_error(reply, result, "HEARTBEAT")
        return reply

    def ack_success(self, job_id: str, token: str, now: int) -> Any:
        reply, result = self._lease_call("ack_success", "ack_success", job_id, token, now)
        if reply == ["OK"]:
            assert result is None
        else:
            self._check_error(reply, result, "ACK_SUCCESS")
        return reply

    def ack_fail(self, job_id: str, token: str, now: int, error: str | None = None) -> Any:
        reply, result = self._lease_call("ack_fail", "ack_fail", job_id, token, now, error=error)
        if reply[0] == "RETRY":
            assert isinstance(result, Unparsed) or result == ("RETRY", int(reply[1]))
        elif reply == ["FAILED"]:
            assert result == ("FAILED", None)
        else:
            self._check_error(reply, result, "ACK_FAIL")
        return reply

    def promote(self, now: int, max_promote: int = 1000) -> int:
        reply, result = self.step(
            lambda: self.oracle.promote_delayed(
                queue=self.queue, max_promote=max_promote, now_ms_override=now),
            "promote_delayed", [now, max_promote],
        )
        assert reply[0] == "OK" and result == int(reply[1])
        return result

    def reap(self, now: int, max_reap: int = 1000) -> int:
        reply, result = self.step(
            lambda: self.oracle.reap_expired(
                queue=self.queue, max_reap=max_reap, now_ms_override=now),
            "reap_expired", [now, max_reap],
        )
        assert reply[0] == "OK" and result == int(reply[1])
        return result

    def pause(self) -> Any:
        reply, result = self.step(lambda: self.oracle.pause(queue=self.queue), "pause", [])
        assert reply == "OK" == result
        return reply

    def resume(self) -> int:
        reply, result = self.step(lambda: self.oracle.resume(queue=self.queue), "resume", [])
        assert reply == result
        return reply

    def raw(self, *command: Any) -> None:
        """The same plain command on both databases, to set up states scripts never make."""
        self.r.execute_command(*command)
        self.r2.execute_command(*command)
        self.assert_same_keys()

    def key(self, suffix: str) -> str:
        return "{" + self.queue + "}:" + suffix


@pytest.fixture
def pair(oracle: Any, r: redis.Redis, r2: redis.Redis, qname: str) -> Any:
    p = Pair(oracle, r, r2, qname)
    yield p
    p.close()


def _job(reply: Any) -> tuple[str, str]:
    """(job id, lease token) of a reserve reply."""
    assert reply[0] == "JOB", reply
    return reply[1], reply[7]


# -- enqueue ---------------------------------------------------------------------------------


def test_enqueue_ungrouped_defaults(pair: Pair) -> None:
    pair.publish("J1", 1000)
    pair.publish("J2", 1001, payload=[1, "é", {"ü": None}])


def test_enqueue_custom_fields(pair: Pair) -> None:
    pair.publish("J1", 1000, max_attempts=7, timeout_ms=123, backoff_ms=0)
    pair.publish("J2", 1000, max_attempts=0, timeout_ms=0, backoff_ms=1)


def test_enqueue_grouped_sets_limit_first_writer_wins(pair: Pair) -> None:
    pair.publish("J1", 1000, gid="g", group_limit=2)
    pair.publish("J2", 1001, gid="g", group_limit=5)
    pair.publish("J3", 1002, gid="h")
    pair.publish("J4", 1003, gid="h", group_limit=3)


@pytest.mark.parametrize("limit", [0, -1])
def test_enqueue_group_limit_not_positive_sets_nothing(pair: Pair, limit: int) -> None:
    pair.publish("J1", 1000, gid="g", group_limit=limit)
    pair.publish("J2", 1000, gid="g", group_limit=limit)
    assert pair.r.exists(pair.key("g:g:limit")) == 0
    assert pair.reserve(2000)[1] == "J1"
    assert pair.reserve(2001) == ["EMPTY"]  # no limit key: 1


@pytest.mark.parametrize("stored", ["0", "-3", "abc", "2.7"])
def test_group_limit_key_read_leniently(pair: Pair, stored: str) -> None:
    for i in range(3):
        pair.publish(f"J{i}", 1000, gid="g")
    pair.raw("SET", pair.key("g:g:limit"), stored)
    for i in range(3):
        pair.reserve(2000 + i)


def test_enqueue_delayed(pair: Pair) -> None:
    pair.publish("J1", 1000, due_ms=5000)
    pair.publish("J2", 1000, due_ms=5000, gid="g", group_limit=2)
    pair.publish("J3", 1000, due_ms=1000)  # due == now: ready at once
    pair.publish("J4", 1000, due_ms=999, gid="g")


# A reused id is where we deliberately differ (the official script overwrites the job and
# queues it twice): ours writes nothing, in every state the job can be in, and the queue
# then goes on exactly as the official one does without that publish.


def test_enqueue_reused_id(pair: Pair) -> None:
    pair.publish("J1", 1000, gid="g", max_attempts=5)
    pair.publish_duplicate("J1", 1050)  # waiting
    job_id, token = _job(pair.reserve(1100))
    pair.ack_fail(job_id, token, 1200, error="boom")
    pair.publish_duplicate("J1", 1300)  # delayed for its retry
    pair.publish_duplicate("J1", 1400, due_ms=9000, gid="h", group_limit=4)
    pair.promote(10000)
    pair.reserve(10001)
    pair.reserve(10002)


def test_enqueue_reused_id_while_active(pair: Pair) -> None:
    pair.publish("J1", 1000)
    job_id, token = _job(pair.reserve(1100))
    pair.publish_duplicate("J1", 1200, gid="g")
    pair.heartbeat(job_id, token, 1300)
    pair.ack_success(job_id, token, 1400)
    pair.publish_duplicate("J1", 1450)  # completed (kept among the newest 100)
    pair.reserve(1500)


def test_enqueue_reused_id_of_a_failed_job(pair: Pair) -> None:
    pair.publish("J1", 1000, max_attempts=1)
    job_id, token = _job(pair.reserve(1100))
    pair.ack_fail(job_id, token, 1200, error="boom")
    pair.publish_duplicate("J1", 1300)
    pair.reserve(1500)


# -- reserve ---------------------------------------------------------------------------------


def test_reserve_empty(pair: Pair) -> None:
    assert pair.reserve(1000) == ["EMPTY"]


def test_reserve_ungrouped_fifo(pair: Pair) -> None:
    for i in range(4):
        pair.publish(f"J{i}", 1000 + i)
    got = [pair.reserve(2000 + i)[1] for i in range(4)]
    assert got == ["J0", "J1", "J2", "J3"]
    assert pair.reserve(3000) == ["EMPTY"]


def test_reserve_grouped_fifo_limit_1(pair: Pair) -> None:
    for i in range(3):
        pair.publish(f"J{i}", 1000 + i, gid="g")
    job_id, token = _job(pair.reserve(2000))
    assert job_id == "J0"
    assert pair.reserve(2001) == ["EMPTY"]  # the group is at its limit of 1
    pair.ack_success(job_id, token, 2002)
    job_id, token = _job(pair.reserve(2003))
    assert job_id == "J1"
    pair.ack_fail(job_id, token, 2004, error="x")
    assert pair.reserve(2005)[1] == "J2"
    assert pair.reserve(2006) == ["EMPTY"]


def test_reserve_grouped_limit_2(pair: Pair) -> None:
    for i in range(4):
        pair.publish(f"J{i}", 1000 + i, gid="g", group_limit=2)
    a = _job(pair.reserve(2000))
    b = _job(pair.reserve(2001))
    assert (a[0], b[0]) == ("J0", "J1")
    assert pair.reserve(2002) == ["EMPTY"]
    pair.ack_success(*a, 2003)
    assert pair.reserve(2004)[1] == "J2"
    assert pair.reserve(2005) == ["EMPTY"]
    pair.ack_success(*b, 2006)
    assert pair.reserve(2007)[1] == "J3"
    assert pair.reserve(2008) == ["EMPTY"]


def test_reserve_groups_take_turns(pair: Pair) -> None:
    for i in range(3):
        pair.publish(f"A{i}", 1000 + i, gid="a")
        pair.publish(f"B{i}", 1000 + i, gid="b", group_limit=3)
    for i in range(6):
        pair.reserve(2000 + i)


def test_reserve_lane_round_robin(pair: Pair) -> None:
    for i in range(3):
        pair.publish(f"U{i}", 1000 + i)
        pair.publish(f"G{i}", 1000 + i, gid=f"g{i}")
    got = [pair.reserve(2000 + i)[1] for i in range(6)]
    assert got == ["G0", "U0", "G1", "U1", "G2", "U2"]
    assert pair.reserve(3000) == ["EMPTY"]  # lane:rr stays as it was


def test_reserve_lane_fallbacks(pair: Pair) -> None:
    pair.publish("U0", 1000)
    pair.publish("U1", 1000)
    pair.publish("G0", 1000, gid="g")
    pair.publish("G1", 1000, gid="g")
    assert pair.reserve(2000)[1] == "G0"  # grouped first
    assert pair.reserve(2001)[1] == "U0"  # ungrouped first
    assert pair.reserve(2002)[1] == "U1"  # grouped first, but g is at its limit
    assert pair.reserve(2003) == ["EMPTY"]


def test_reserve_timeout_zero_means_60s(pair: Pair) -> None:
    pair.publish("J1", 1000, timeout_ms=0)
    pair.publish("J2", 1000, timeout_ms=-5)
    assert pair.reserve(2000)[3] == str(2000 + 60000)
    assert pair.reserve(2000)[3] == str(2000 + 60000)


def test_reserve_group_at_limit_is_offered_later(pair: Pair) -> None:
    pair.publish("G0", 1000, gid="g")
    pair.publish("H0", 1000, gid="h")
    pair.raw("SET", pair.key("g:g:inflight"), "1")  # g at its limit while still offered
    assert pair.reserve(2000)[1] == "H0"
    pair.reserve(2001)
    pair.raw("SET", pair.key("g:g:inflight"), "0")
    pair.reserve(2002)


def test_reserve_gives_up_after_ten_blocked_groups(pair: Pair) -> None:
    for i in range(12):
        pair.publish(f"G{i}", 1000, gid=f"g{i:02}")
    for i in range(11):
        pair.raw("SET", pair.key(f"g:g{i:02}:inflight"), "1")
    assert pair.reserve(2000) == ["EMPTY"]  # ten rounds: g00..g09, each offered again later
    assert pair.reserve(2001)[1] == "G11"  # g10, then g11
    pair.raw("DEL", pair.key("g:g00:inflight"))
    assert pair.reserve(2002)[1] == "G0"


def test_reserve_skips_group_with_empty_list(pair: Pair) -> None:
    pair.publish("G0", 1000, gid="g")
    pair.publish("H0", 1000, gid="h")
    pair.raw("DEL", pair.key("g:g:wait"))
    assert pair.reserve(2000)[1] == "H0"


def test_reserve_skips_empty_gid(pair: Pair) -> None:
    pair.publish("G0", 1000, gid="g")
    pair.raw("ZADD", pair.key("groups:ready"), "0", "")
    pair.reserve(2000)


def test_reserve_stats_floor_order(pair: Pair) -> None:
    # Counters that drifted to 0 show the order of decrements and increments.
    pair.publish("G0", 1000, gid="g", group_limit=2)
    pair.publish("G1", 1000, gid="g")
    pair.publish("H0", 1000, gid="h")
    pair.raw("SET", pair.key("g:h:inflight"), "1")
    pair.raw("DEL", pair.key("stats"))
    pair.reserve(2000)
    pair.raw("DEL", pair.key("stats"))
    pair.reserve(2001)


def test_reserve_job_hash_gone(pair: Pair) -> None:
    pair.publish("J1", 1000)
    pair.publish("G1", 1000, gid="g")
    pair.raw("DEL", pair.key("job:J1"), pair.key("job:G1"))
    pair.reserve(2000)
    pair.reserve(2001)


def test_reserve_keeps_first_started(pair: Pair) -> None:
    pair.publish("J1", 1000, backoff_ms=0)
    job_id, token = _job(pair.reserve(2000))
    pair.ack_fail(job_id, token, 2100)
    pair.promote(2200)
    assert pair.reserve(2300)[4] == "2"


@pytest.mark.parametrize("now", [123456789012345678, 10**15 + 1])
def test_numbers_beyond_14_digits(pair: Pair, now: int) -> None:
    # Beyond 14 digits Lua's tostring switches to exponent form; stored fields, replies and
    # the lease token all follow it.
    pair.publish("J1", now, timeout_ms=1000, backoff_ms=10)
    pair.publish("G1", now, gid="g", timeout_ms=1000, due_ms=now + 10**15 + 7)
    job_id, token = _job(pair.reserve(now))
    pair.heartbeat(job_id, token, now + 1)
    pair.ack_fail(job_id, token, now + 2, error="e")
    pair.promote(now + 10**16)
    pair.reserve(now + 10**16)
    pair.reap(now + 10**17)


def test_large_job_settings(pair: Pair) -> None:
    big = 123456789012345678
    pair.publish("J1", 1000, max_attempts=big, timeout_ms=big, backoff_ms=big)
    pair.publish("G1", 1000, gid="g", group_limit=big)
    job_id, token = _job(pair.reserve(2000))
    pair.heartbeat(job_id, token, 3000)
    pair.ack_fail(job_id, token, 4000)
    pair.reserve(5000)


def test_pause_reserve_resume(pair: Pair) -> None:
    pair.publish("J1", 1000)
    pair.pause()
    assert pair.reserve(2000) == ["PAUSED"]
    pair.pause()
    assert pair.resume() == 1
    assert pair.resume() == 0
    assert pair.reserve(2001)[1] == "J1"


# -- heartbeat -------------------------------------------------------------------------------


def test_heartbeat_extends_from_later_of_deadline_and_now(pair: Pair) -> None:
    pair.publish("J1", 1000, timeout_ms=1000)
    job_id, token = _job(pair.reserve(2000))  # deadline 3000
    assert pair.heartbeat(job_id, token, 2500) == ["OK", "4000"]
    assert pair.heartbeat(job_id, token, 2600) == ["OK", "5000"]
    assert pair.heartbeat(job_id, token, 9000) == ["OK", "10000"]  # past the deadline


def test_heartbeat_timeout_zero(pair: Pair) -> None:
    pair.publish("J1", 1000, timeout_ms=0)
    job_id, token = _job(pair.reserve(2000))
    assert pair.heartbeat(job_id, token, 3000) == ["OK", str(62000 + 60000)]


def test_heartbeat_errors(pair: Pair) -> None:
    pair.publish("J1", 1000)
    job_id, token = _job(pair.reserve(2000))
    assert pair.heartbeat(job_id, "", 2001) == ["ERR", "TOKEN_REQUIRED"]
    assert pair.heartbeat(job_id, "nope", 2002) == ["ERR", "TOKEN_MISMATCH"]
    assert pair.heartbeat("missing", "nope", 2003) == ["ERR", "TOKEN_MISMATCH"]
    pair.raw("ZREM", pair.key("active"), job_id)
    assert pair.heartbeat(job_id, token, 2004) == ["ERR", "NOT_ACTIVE"]


# -- ack_success -----------------------------------------------------------------------------


def test_ack_success_ungrouped(pair: Pair) -> None:
    pair.publish("J1", 1000)
    job_id, token = _job(pair.reserve(2000))
    assert pair.ack_success(job_id, token, 3000) == ["OK"]
    assert pair.ack_success(job_id, token, 3001) == ["ERR", "TOKEN_MISMATCH"]


def test_ack_success_errors(pair: Pair) -> None:
    pair.publish("J1", 1000)
    job_id, token = _job(pair.reserve(2000))
    assert pair.ack_success(job_id, "", 2001) == ["ERR", "TOKEN_REQUIRED"]
    assert pair.ack_success(job_id, "nope", 2002) == ["ERR", "TOKEN_MISMATCH"]
    pair.raw("ZREM", pair.key("active"), job_id)
    assert pair.ack_success(job_id, token, 2003) == ["ERR", "NOT_ACTIVE"]


def test_ack_success_releases_group(pair: Pair) -> None:
    pair.publish("G0", 1000, gid="g", group_limit=2)
    pair.publish("G1", 1000, gid="g")
    pair.publish("G2", 1000, gid="g")
    a = _job(pair.reserve(2000))
    b = _job(pair.reserve(2001))
    pair.ack_success(*a, 2002)  # g offered again at 2002
    pair.ack_success(*b, 2003)  # already offered: NX keeps 2002
    pair.reserve(2004)


def test_ack_success_group_inflight_floor(pair: Pair) -> None:
    pair.publish("G0", 1000, gid="g")
    pair.publish("G1", 1000, gid="g")
    job_id, token = _job(pair.reserve(2000))
    pair.raw("DEL", pair.key("g:g:inflight"))
    pair.ack_success(job_id, token, 2001)


def test_completed_list_keeps_100(pair: Pair) -> None:
    for i in range(105):
        pair.publish(f"J{i:03}", 1000 + i, check=False)
    for i in range(105):
        job_id, token = _job(pair.reserve(2000 + i, check=False))
        check = i >= 98 or i % 20 == 0
        assert pair.step(
            lambda: pair.oracle.ack_success(
                queue=pair.queue, job_id=job_id, lease_token=token, now_ms_override=3000 + i),
            "ack_success", [job_id, 3000 + i, token], check,
        )[0] == ["OK"]
    assert pair.r.llen(pair.key("completed")) == 100
    for i in range(5):
        assert pair.r.exists(pair.key(f"job:J{i:03}")) == 0
    assert pair.r.hget(pair.key("stats"), "completed_kept") == b"100"


# -- ack_fail --------------------------------------------------------------------------------


@pytest.mark.parametrize("max_attempts", [0, 1, 2, 3])
def test_ack_fail_retries_until_failed(pair: Pair, max_attempts: int) -> None:
    pair.publish("J1", 1000, max_attempts=max_attempts, backoff_ms=500)
    now = 2000
    outcomes = []
    while True:
        job_id, token = _job(pair.reserve(now))
        reply = pair.ack_fail(job_id, token, now + 10, error=f"attempt at {now}")
        outcomes.append(reply[0])
        if reply == ["FAILED"]:
            break
        assert reply == ["RETRY", str(now + 10 + 500)]
        assert pair.reserve(now + 20) == ["EMPTY"]
        assert pair.promote(now + 509) == 0
        assert pair.promote(now + 510) == 1
        now += 1000
    assert outcomes == ["RETRY"] * (max(max_attempts, 1) - 1) + ["FAILED"]


def test_ack_fail_grouped(pair: Pair) -> None:
    pair.publish("G0", 1000, gid="g", max_attempts=1)
    pair.publish("G1", 1000, gid="g", max_attempts=2, backoff_ms=0)
    pair.ack_fail(*_job(pair.reserve(2000)), 2001, error="e")
    job_id, token = _job(pair.reserve(2002))
    assert pair.ack_fail(job_id, token, 2003) == ["RETRY", "2003"]
    pair.promote(2003)
    pair.ack_fail(*_job(pair.reserve(2004)), 2005)


def test_ack_fail_without_error_and_empty_error(pair: Pair) -> None:
    pair.publish("J1", 1000)
    pair.ack_fail(*_job(pair.reserve(2000)), 2001)
    pair.promote(9000)
    pair.ack_fail(*_job(pair.reserve(9001)), 9002, error="")


def test_ack_fail_error_truncated_to_4096_bytes(pair: Pair) -> None:
    pair.publish("J1", 1000, max_attempts=5, backoff_ms=0)
    pair.ack_fail(*_job(pair.reserve(2000)), 2001, error="x" * 5000)
    assert len(pair.r.hget(pair.key("job:J1"), "last_error")) == 4096
    pair.promote(2001)
    pair.ack_fail(*_job(pair.reserve(2002)), 2003, error="é" * 3000)  # cut inside a character
    assert len(pair.r.hget(pair.key("job:J1"), "last_error")) == 4096
    pair.promote(2003)
    pair.ack_fail(*_job(pair.reserve(2004)), 2005, error="y" * 4096)


def test_ack_fail_errors(pair: Pair) -> None:
    pair.publish("J1", 1000)
    job_id, token = _job(pair.reserve(2000))
    assert pair.ack_fail(job_id, "", 2001, error="e") == ["ERR", "TOKEN_REQUIRED"]
    assert pair.ack_fail(job_id, "nope", 2002, error="e") == ["ERR", "TOKEN_MISMATCH"]
    pair.raw("ZREM", pair.key("active"), job_id)
    assert pair.ack_fail(job_id, token, 2003, error="e") == ["ERR", "NOT_ACTIVE"]


# -- promote_delayed -------------------------------------------------------------------------


def test_promote_in_due_order_with_limit(pair: Pair) -> None:
    for i in range(5):
        pair.publish(f"J{i}", 1000, due_ms=5000 - i * 100)
    pair.publish("G0", 1000, due_ms=4500, gid="g", group_limit=2)
    pair.publish("G1", 1000, due_ms=4550, gid="g")
    pair.publish("H0", 1000, due_ms=9000, gid="h")
    assert pair.promote(4000) == 0
    assert pair.promote(4700, max_promote=2) == 2
    assert pair.promote(4700, max_promote=2) == 2
    assert pair.promote(4700, max_promote=10) == 0
    assert pair.promote(10000, max_promote=10) == 4


def test_promote_grouped_respects_inflight(pair: Pair) -> None:
    pair.publish("G0", 1000, gid="g")
    pair.publish("G1", 1000, gid="g", due_ms=3000)
    job_id, token = _job(pair.reserve(2000))
    pair.promote(3000)  # g is at its limit: not offered
    assert pair.reserve(3001) == ["EMPTY"]
    pair.ack_success(job_id, token, 3002)
    assert pair.reserve(3003)[1] == "G1"


def test_promote_job_hash_gone(pair: Pair) -> None:
    pair.publish("J1", 1000, due_ms=2000)
    pair.raw("DEL", pair.key("job:J1"))
    pair.promote(3000)


@pytest.mark.parametrize("limit", [0, -1])
def test_promote_limit_not_positive(pair: Pair, limit: int) -> None:
    pair.publish("J1", 1000, due_ms=2000)
    pair.promote(3000, max_promote=limit)


# -- reap_expired ----------------------------------------------------------------------------


def test_reap_ungrouped(pair: Pair) -> None:
    pair.publish("J1", 1000, timeout_ms=1000, max_attempts=2, backoff_ms=100)
    pair.publish("J2", 1000, timeout_ms=5000)
    job_id, token = _job(pair.reserve(2000))  # deadline 3000
    pair.reserve(2000)  # deadline 7000
    assert pair.reap(2999) == 0
    assert pair.reap(3000) == 1
    assert pair.heartbeat(job_id, token, 3001) == ["ERR", "TOKEN_MISMATCH"]
    assert pair.promote(3100) == 1
    pair.reserve(3200)
    assert pair.reap(10000) == 2  # J1 used both attempts: failed


def test_reap_grouped_releases_group(pair: Pair) -> None:
    pair.publish("G0", 1000, gid="g", timeout_ms=100)
    pair.publish("G1", 1000, gid="g", timeout_ms=100)
    pair.reserve(2000)
    assert pair.reserve(2001) == ["EMPTY"]
    assert pair.reap(2100) == 1
    pair.reserve(2101)


def test_reap_with_max(pair: Pair) -> None:
    for i in range(5):
        gid = "g" if i % 2 else None
        pair.publish(f"J{i}", 1000, timeout_ms=100 + i, max_attempts=1, gid=gid, group_limit=3)
    for i in range(5):
        pair.reserve(2000)
    assert pair.reap(3000, max_reap=2) == 2
    assert pair.reap(3000, max_reap=10) == 3


@pytest.mark.parametrize("limit", [0, -1])
def test_reap_limit_not_positive(pair: Pair, limit: int) -> None:
    pair.publish("J1", 1000, timeout_ms=10)
    pair.reserve(2000)
    pair.reap(3000, max_reap=limit)


def test_reap_exhausted_attempts_fail(pair: Pair) -> None:
    pair.publish("J1", 1000, max_attempts=1, timeout_ms=10)
    pair.publish("G1", 1000, max_attempts=0, timeout_ms=10, gid="g")
    pair.reserve(2000)
    pair.reserve(2000)
    assert pair.reap(3000) == 2


def test_reap_job_hash_gone(pair: Pair) -> None:
    pair.publish("J1", 1000, timeout_ms=10)
    pair.publish("G1", 1000, timeout_ms=10, gid="g")
    pair.reserve(2000)
    pair.reserve(2000)
    pair.raw("DEL", pair.key("job:J1"), pair.key("job:G1"))
    assert pair.reap(3000) == 2


def test_reap_after_heartbeat(pair: Pair) -> None:
    pair.publish("J1", 1000, timeout_ms=1000)
    job_id, token = _job(pair.reserve(2000))
    pair.heartbeat(job_id, token, 2900)  # deadline 4000
    assert pair.reap(3500) == 0
    assert pair.reap(4000) == 1


# -- random sequences ------------------------------------------------------------------------

GIDS = ["a", "b", "c"]

publish_op = st.tuples(
    st.just("publish"),
    st.fixed_dictionaries({
        "new_id": st.sampled_from([True, True, True, False]),  # False: reuse an id
        "gid": st.sampled_from([None, None] + GIDS),
        "group_limit": st.sampled_from([0, 0, 1, 2, 3, -1]),
        "delay": st.sampled_from([0, 0, 0, 100, 1500]),
        "max_attempts": st.sampled_from([0, 1, 2, 3]),
        "timeout_ms": st.sampled_from([0, 200, 1000, 5000]),
        "backoff_ms": st.sampled_from([0, 50, 700]),
    }),
)
lease_op = st.tuples(
    st.sampled_from(["heartbeat", "ack_success", "ack_fail"]),
    st.fixed_dictionaries({
        "pick": st.integers(0, 3),  # counted from the newest lease
        "token": st.sampled_from(["held", "held", "held", "empty", "bogus"]),
        "error": st.sampled_from([None, "", "boom", "é" * 2100]),
    }),
)
batch_op = st.tuples(st.sampled_from(["promote", "reap"]), st.integers(1, 4))
reserve_op = st.tuples(st.just("reserve"), st.none())
switch_op = st.tuples(st.sampled_from(["pause", "resume", "resume"]), st.none())
ops = st.lists(
    st.tuples(
        st.integers(0, 800),  # how far "now" moves before the step
        # Repeated branches weigh the draw towards the operations that move jobs.
        st.one_of(publish_op, publish_op, reserve_op, reserve_op, lease_op, lease_op, lease_op,
                  batch_op, switch_op),
    ),
    min_size=8,
    max_size=50,
)

_examples = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops)
def test_random_sequences(oracle: Any, r: redis.Redis, r2: redis.Redis, qname: str,
                          steps: list) -> None:
    queue = f"{qname}x{next(_examples)}"
    pair = Pair(oracle, r, r2, queue)
    try:
        now, ids, leases = 1000, 0, []
        for advance, (kind, arg) in steps:
            now += advance
            if kind == "publish":
                if arg["new_id"] or ids == 0:
                    ids += 1
                job_id = f"J{ids if arg['new_id'] else (now % ids) + 1}"
                # An id whose job exists (both sides alike: the keyspaces are equal here)
                # is the one documented divergence: ours refuses it, changing nothing.
                publish = (
                    pair.publish_duplicate
                    if pair.r.exists("{" + queue + "}:job:" + job_id)
                    else pair.publish
                )
                publish(
                    job_id, now, gid=arg["gid"], group_limit=arg["group_limit"],
                    due_ms=now + arg["delay"] if arg["delay"] else 0,
                    max_attempts=arg["max_attempts"], timeout_ms=arg["timeout_ms"],
                    backoff_ms=arg["backoff_ms"],
                )
            elif kind == "reserve":
                reply = pair.reserve(now)
                event(f"reserve {reply[0]}")
                if reply[0] == "JOB":
                    leases.append(_job(reply))
            elif kind in ("promote", "reap"):
                event(f"{kind} moved {getattr(pair, kind)(now, arg)}")
            elif kind in ("pause", "resume"):
                getattr(pair, kind)()
            elif leases:
                job_id, token = leases[-1 - arg["pick"] % len(leases)]
                token = {"held": token, "empty": "", "bogus": "x" + token[1:]}[arg["token"]]
                if kind == "ack_fail":
                    reply = pair.ack_fail(job_id, token, now, error=arg["error"])
                else:
                    reply = getattr(pair, kind)(job_id, token, now)
                event(f"{kind} {reply[-1] if reply[0] == 'ERR' else reply[0]}")
    finally:
        pair.close()
        prefix = "{" + queue + "}"
        delete_prefixed(r, prefix)
        delete_prefixed(r2, prefix)
