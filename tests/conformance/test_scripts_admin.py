"""Our admin scripts against the official SDK: retry, remove, completion counters.

Every test builds the same starting state on two databases with the official client,
runs the operation under test with the official client on the oracle database and with
our script on ours, and then requires identical replies and identical keyspaces
(PROTOCOL.md §5). The official package is used only as a black box: through its public
methods, and, for arguments its methods refuse to send (a batch of 101 ids, a
non-numeric `expected`), through the `redis=` connection it accepts, which swaps the
arguments of its next EVALSHA so the same server-side call can be made on both sides.
"""

# Shell-independent: our Lua runs with EVAL, bypassing both clients (the shells send these
# same scripts; their calls are compared on both shells in test_random_sequences, test_release,
# test_bulk and test_interop).
from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import decoded
from support import connect, delete_prefixed, run_script, snapshot

NOW = 1_700_000_000_000
LANES = ("wait", "delayed", "failed", "completed", "gwait")


# --- the official client, tapped -------------------------------------------------------


class Tap:
    """A redis connection for the official client that records the raw reply of its
    script calls (EVALSHA, or EVAL after a NOSCRIPT) and can replace their ARGV."""

    def __init__(self, conn: redis.Redis) -> None:
        self._conn = conn
        self.argv: list[str] | None = None
        self.reply: Any = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if name not in ("evalsha", "eval"):
            return attr

        def run(script: Any, numkeys: int, *keys_and_args: Any) -> Any:
            if self.argv is not None:  # kept for a NOSCRIPT retry
                keys_and_args = (*keys_and_args[:numkeys], *self.argv)
            self.reply = None
            self.reply = attr(script, numkeys, *keys_and_args)
            return self.reply

        return run


def _official(url: str, conn: Any = None) -> Any:
    from omniq.client import OmniqClient as OfficialClient

    # The official client reads str replies (its own connections decode responses).
    return OfficialClient(redis=conn or connect(url, decode_responses=True))


class Oracle:
    """The official client on the oracle db; ``call`` returns (public outcome, raw reply)."""

    def __init__(self, url: str) -> None:
        self.tap = Tap(connect(url, decode_responses=True))
        self.client = _official(url, self.tap)

    def call(self, method: str, argv: list[str] | None = None, **kwargs: Any) -> tuple[Any, Any]:
        """Run ``method``; with ``argv``, its script receives that ARGV instead."""
        self.tap.argv = argv
        self.tap.reply = None
        try:
            outcome: Any = getattr(self.client, method)(**kwargs)
        except Exception as exc:  # the public outcome is compared below
            outcome = _plain(exc)
        finally:
            self.tap.argv = None
        return outcome, self.tap.reply


def _plain(exc: Exception) -> Exception:
    """The official error's type and short message only: a traceback or repr of its
    internals must never reach our test output (we do not read that package)."""
    text = str(exc)
    if len(text) > 200 or "\n" in text:
        text = "<message withheld>"
    return type(exc)(text) if isinstance(exc, (RuntimeError, ValueError)) else RuntimeError(
        type(exc).__name__ + ": " + text)


@pytest.fixture
def oracle_tap(oracle_url: str) -> Iterator[Oracle]:
    o = Oracle(oracle_url)
    yield o
    o.client.close()


@pytest.fixture
def setup_clients(redis_url: str, oracle_url: str) -> Iterator[list[Any]]:
    """Official clients on both databases, used only to build identical starting states."""
    clients = [_official(redis_url), _official(oracle_url)]
    yield clients
    for c in clients:
        c.close()


# --- comparing ---------------------------------------------------------------------------


def assert_same_keyspace(r: redis.Redis, r2: redis.Redis, q: str, clock: bool = False) -> None:
    """Both databases hold the same keys under queue/counter ``q``, hash fields in the
    same order. ``clock``: stats.last_activity_ms came from each server call's own clock
    (remove_job), so it may differ by up to a second."""
    prefixes = ("{" + q, "{cc:" + q)
    mine, theirs = snapshot(r, *prefixes), snapshot(r2, *prefixes)
    if clock:
        stats = ("{" + q + "}:stats").encode()
        a = mine.get(stats, (None, {}, None))[1].pop(b"last_activity_ms", None)
        b = theirs.get(stats, (None, {}, None))[1].pop(b"last_activity_ms", None)
        assert (a is None) == (b is None)
        if a is not None:
            assert abs(int(a) - int(b)) <= 1000, (a, b)
    assert mine == theirs
    for key, (kind, value, _) in mine.items():
        if kind == "hash":
            assert list(value) == list(theirs[key][1]), key


def same_activity_stamp(r: redis.Redis, r2: redis.Redis, q: str) -> None:
    """After a remove_job: its activity stamp is each server call's own whole second, so
    two calls may straddle a second boundary (the compare just made allowed for that).
    Steps that follow in a mix and do not stamp again are compared exactly, so ours is
    given the oracle's stamp (an HSET of an existing field keeps the field order)."""
    stats = "{" + q + "}:stats"
    stamp = r2.hget(stats, "last_activity_ms")
    if stamp is not None:
        r.hset(stats, "last_activity_ms", stamp)


# What the official methods return on success (their errors raise RuntimeError).
SUCCESS_RESULT = {"retry_failed": None, "remove_job": "OK", "childs_init": None}


def public_outcome_matches(method: str, outcome: Any, raw: list[str]) -> None:
    """The official method's result is what its raw reply should give a caller."""
    if method in ("retry_failed", "remove_job", "childs_init"):
        if raw == ["OK"]:
            assert outcome == SUCCESS_RESULT[method]
        else:
            assert isinstance(outcome, RuntimeError) and raw[1] in str(outcome), outcome
    elif method in ("retry_failed_batch", "remove_jobs_batch"):
        if raw and raw[0] == "ERR":
            return  # whole-batch refusals: the official client's handling is not our concern
        items, i = [], 0
        while i < len(raw):
            if raw[i + 1] == "OK":
                items.append((raw[i], "OK", None))
                i += 2
            else:
                items.append((raw[i], "ERR", raw[i + 2]))
                i += 3
        assert [(x.job_id, x.status, x.reason) for x in outcome] == items
    elif method == "child_ack":
        # Every error or unreadable reply becomes -1; the client never raises.
        try:
            expected = int(raw[1]) if raw[0] == "OK" else -1
        except ValueError:
            expected = -1
        assert outcome == expected


#: What run_both reports when a script fails with a Redis error (a Lua runtime error);
#: writes made before the error stay, so the keyspaces are still compared.
SCRIPT_ERROR = "<script error>"


def run_both(
    r: redis.Redis,
    r2: redis.Redis,
    oracle: Oracle,
    q: str,
    method: str,
    script: str,
    anchor: str,
    argv: list[str],
    *,
    override: bool = False,
    **kwargs: Any,
) -> list[str]:
    """The official ``method(**kwargs)`` on the oracle db, our ``script`` with ``argv`` on
    ours; require the same reply and keyspace. ``override`` also sends ``argv`` to the
    official script (for arguments its public method would not send). Returns the reply."""
    outcome, theirs = oracle.call(method, argv if override else None, **kwargs)
    try:
        mine = decoded(run_script(r, script, anchor, *argv))
    except redis.ResponseError:
        mine = SCRIPT_ERROR
    if theirs is None:  # the official script raised (the Tap saw no reply)
        theirs = SCRIPT_ERROR
    assert mine == theirs, (argv, mine, theirs)
    if not override and mine != SCRIPT_ERROR:
        public_outcome_matches(method, outcome, theirs)
    assert_same_keyspace(r, r2, q, clock=script == "remove_job")
    return mine


def anchor_of(q: str) -> str:
    return "{" + q + "}:meta"


def counter_anchor_of(k: str) -> str:
    return "{cc:" + k + "}:meta"


# --- starting states --------------------------------------------------------------------


def prepare(c: Any, q: str) -> None:
    """A queue with a job in every lane and state (built with the official client).

    Afterwards: F1 F2 failed; GF1 (g1) GF2 (g2) failed; C1, C2 (g1) completed; R1 delayed
    by a retry backoff; A1 active; GA (g2) active, so g2 is full; W1 W2 waiting, DUP twice
    in wait (a reused id); G1a G1b waiting in g1; G3a G3b waiting in g3 (limit 2),
    GDUP twice in g3; D1 and GD1 (g1) delayed by due_ms.
    """
    clock = iter(range(NOW, NOW + 100_000))

    def pub(jid: str, **kw: Any) -> None:
        c.publish(queue=q, payload={"id": jid}, job_id=jid, now_ms_override=next(clock), **kw)

    def run(jid: str, finish: bool | None, **kw: Any) -> None:
        pub(jid, **kw)
        job = c.reserve(queue=q, now_ms_override=next(clock))
        assert job.job_id == jid
        if finish is True:
            c.ack_success(queue=q, job_id=jid, lease_token=job.lease_token,
                          now_ms_override=next(clock))
        elif finish is False:
            c.ack_fail(queue=q, job_id=jid, lease_token=job.lease_token, error="boom " + jid,
                       now_ms_override=next(clock))

    run("F1", False, max_attempts=1)
    run("F2", False, max_attempts=1)
    run("GF1", False, max_attempts=1, gid="g1")
    run("GF2", False, max_attempts=1, gid="g2")
    run("C1", True)
    run("C2", True, gid="g1")
    run("R1", False)
    run("A1", None)
    run("GA", None, gid="g2")
    for jid in ("W1", "W2", "DUP", "DUP"):
        pub(jid)
    for jid in ("G1a", "G1b"):
        pub(jid, gid="g1")
    for jid in ("G3a", "G3b", "GDUP", "GDUP"):
        pub(jid, gid="g3", group_limit=2)
    pub("D1", due_ms=NOW + 600_000)
    pub("GD1", gid="g1", due_ms=NOW + 600_000)


JOB_IDS = ("F1", "F2", "GF1", "GF2", "C1", "C2", "R1", "A1", "GA", "W1", "W2", "DUP",
           "G1a", "G1b", "G3a", "G3b", "GDUP", "D1", "GD1")


@pytest.fixture
def q(qname: str, setup_clients: list[Any], r: redis.Redis, r2: redis.Redis) -> str:
    """``qname``, prepared identically on both databases."""
    for c in setup_clients:
        prepare(c, qname)
    assert_same_keyspace(r, r2, qname)
    return qname


def on_both(r: redis.Redis, r2: redis.Redis, *command: Any) -> None:
    """Shape a starting state by hand, identically on both databases."""
    for conn in (r, r2):
        conn.execute_command(*command)


# --- retry_failed -------------------------------------------------------------------------


def retry(r: redis.Redis, r2: redis.Redis, oracle: Oracle, q: str, jid: str, now: int) -> list[str]:
    return run_both(r, r2, oracle, q, "retry_failed", "retry_failed", anchor_of(q),
                    [jid, str(now)], queue=q, job_id=jid, now_ms_override=now)


def test_retry_failed_ungrouped(r, r2, oracle_tap, q):
    assert retry(r, r2, oracle_tap, q, "F1", NOW + 1000) == ["OK"]
    assert r.lrange("{" + q + "}:wait", 0, -1)[-1] == b"F1"
    assert retry(r, r2, oracle_tap, q, "F2", NOW + 1001) == ["OK"]


def test_retry_failed_grouped_offers_the_group(r, r2, oracle_tap, q):
    # g1 is idle (nothing in flight), so its retried job makes it ready again.
    assert retry(r, r2, oracle_tap, q, "GF1", NOW + 1000) == ["OK"]
    assert r.zscore("{" + q + "}:groups:ready", "g1") is not None


def test_retry_failed_grouped_full_group_not_offered(r, r2, oracle_tap, q):
    # g2 has GA in flight at its limit of 1: the job waits in the group list only.
    assert retry(r, r2, oracle_tap, q, "GF2", NOW + 1000) == ["OK"]
    assert r.zscore("{" + q + "}:groups:ready", "g2") is None


def test_retry_failed_group_already_ready_keeps_its_score(r, r2, oracle_tap, q):
    on_both(r, r2, "ZADD", "{" + q + "}:groups:ready", "5", "g1")
    assert retry(r, r2, oracle_tap, q, "GF1", NOW + 1000) == ["OK"]
    assert r.zscore("{" + q + "}:groups:ready", "g1") == 5


@pytest.mark.parametrize("jid", ["NOPE", "", "W1", "A1", "C1", "D1", "R1", "G1a"])
def test_retry_failed_refusals(r, r2, oracle_tap, q, jid):
    reply = retry(r, r2, oracle_tap, q, jid, NOW + 1000)
    assert reply == ["ERR", "NO_JOB" if jid in ("NOPE", "") else "NOT_FAILED"]


def test_retry_failed_twice(r, r2, oracle_tap, q):
    assert retry(r, r2, oracle_tap, q, "F1", NOW + 1000) == ["OK"]
    assert retry(r, r2, oracle_tap, q, "F1", NOW + 1001) == ["ERR", "NOT_FAILED"]


def test_retry_failed_scrubs_stale_copies(r, r2, oracle_tap, q):
    # A failed id left behind in other lanes (and twice in failed) is queued exactly once.
    base = "{" + q + "}"
    on_both(r, r2, "ZADD", base + ":active", NOW, "F1")
    on_both(r, r2, "ZADD", base + ":delayed", NOW, "F1")
    on_both(r, r2, "RPUSH", base + ":wait", "F1", "F1")
    on_both(r, r2, "LPUSH", base + ":failed", "F1")
    for lane in ("active", "completed", "wait"):
        on_both(r, r2, "ZADD", base + ":idx:" + lane, "7", "F1")
    on_both(r, r2, "ZADD", base + ":idx:delayed", "7", "F1")
    on_both(r, r2, "RPUSH", base + ":g:g1:wait", "F1")
    assert retry(r, r2, oracle_tap, q, "F1", NOW + 1000) == ["OK"]


def test_retry_failed_stats_floor_at_zero(r, r2, oracle_tap, q):
    on_both(r, r2, "HSET", "{" + q + "}:stats", "failed", "0")
    on_both(r, r2, "HDEL", "{" + q + "}:stats", "waiting", "group_waiting", "groups_ready")
    assert retry(r, r2, oracle_tap, q, "F1", NOW + 1000) == ["OK"]
    assert retry(r, r2, oracle_tap, q, "GF1", NOW + 1001) == ["OK"]


def test_retry_failed_odd_hashes(r, r2, oracle_tap, q):
    base = "{" + q + "}"
    # A hash without `state`, an empty gid, an unparsable group limit/inflight.
    on_both(r, r2, "HSET", base + ":job:ODD", "payload", "{}")
    on_both(r, r2, "HSET", base + ":job:F2", "gid", "")
    on_both(r, r2, "SET", base + ":g:g1:limit", "x")
    on_both(r, r2, "SET", base + ":g:g1:inflight", "0.5")
    for i, jid in enumerate(("ODD", "F2", "GF1")):
        retry(r, r2, oracle_tap, q, jid, NOW + 1000 + i)


@pytest.mark.parametrize("now", ["0012", "12.5", "1e3", " 7", "0.1", "123456789012345678"])
def test_retry_failed_now_ms_is_written_as_given(r, r2, oracle_tap, q, now):
    run_both(r, r2, oracle_tap, q, "retry_failed", "retry_failed", anchor_of(q), ["GF1", now],
             override=True, queue=q, job_id="GF1", now_ms_override=NOW)


# --- retry_failed_batch -----------------------------------------------------------------


def retry_batch(r, r2, oracle, q, ids, now, argv=None):
    argv_ = argv if argv is not None else [str(now), str(len(ids)), *ids]
    return run_both(r, r2, oracle, q, "retry_failed_batch", "retry_failed_batch", anchor_of(q),
                    argv_, override=argv is not None, queue=q, job_ids=list(ids),
                    now_ms_override=now)


def test_retry_failed_batch_mixed(r, r2, oracle_tap, q):
    ids = ["F1", "", "NOPE", "W1", "GF1", "GF2", "F1", "F2", "A1"]
    reply = retry_batch(r, r2, oracle_tap, q, ids, NOW + 1000)
    assert reply == ["F1", "OK", "", "ERR", "BAD_JOB_ID", "NOPE", "ERR", "NO_JOB",
                     "W1", "ERR", "NOT_FAILED", "GF1", "OK", "GF2", "OK",
                     "F1", "ERR", "NOT_FAILED", "F2", "OK", "A1", "ERR", "NOT_FAILED"]


def test_retry_failed_batch_all_refused_is_not_activity(r, r2, oracle_tap, q):
    reply = retry_batch(r, r2, oracle_tap, q, ["W1", "NOPE", ""], NOW + 1000)
    assert [reply[i + 2] for i in range(0, len(reply), 3)] == ["NOT_FAILED", "NO_JOB", "BAD_JOB_ID"]


def test_retry_failed_batch_leaves_active_alone(r, r2, oracle_tap, q):
    on_both(r, r2, "ZADD", "{" + q + "}:active", NOW, "F1")
    assert retry_batch(r, r2, oracle_tap, q, ["F1"], NOW + 1000) == ["F1", "OK"]
    assert r.zscore("{" + q + "}:active", "F1") is not None


def test_retry_failed_batch_empty(r, r2, oracle_tap, q):
    assert retry_batch(r, r2, oracle_tap, q, [], NOW + 1000) == []


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["101", *["F1"] * 101], ["ERR", "BATCH_TOO_LARGE", "100"]),
        (["101"], ["ERR", "BATCH_TOO_LARGE", "100"]),
        (["inf", "F1"], ["ERR", "BATCH_TOO_LARGE", "100"]),
        (["100.5", "F1"], ["ERR", "BATCH_TOO_LARGE", "100"]),
        (["2", "F1"], ["ERR", "BAD_ARGS"]),
        (["100", *["F1"] * 99], ["ERR", "BAD_ARGS"]),
        (["2.5", "F1", "F2"], ["ERR", "BAD_ARGS"]),
        (["0", "F1"], []),
        (["-1"], []),
        ([], []),
        (["0.5", "F1"], []),
        (["nan", "F1"], []),
        # count is read as a Lua number: fractions, hex, blanks and extra ids are tolerated
        (["1.9", "F1", "F2"], ["F1", "OK"]),
        (["2.5", "F1", "F2", "W1"], ["F1", "OK", "F2", "OK"]),
        (["0x1", "F1"], ["F1", "OK"]),
        ([" 1", "F1"], ["F1", "OK"]),
        (["1", "F1", "F2"], ["F1", "OK"]),
        (["1e2", *["F1"] * 100], ["F1", "OK"] + ["F1", "ERR", "NOT_FAILED"] * 99),
    ],
)
def test_retry_failed_batch_script_arguments(r, r2, oracle_tap, q, argv, expected):
    # argv is what follows now_ms.
    reply = retry_batch(r, r2, oracle_tap, q, ["F1"], NOW, argv=[str(NOW + 1000), *argv])
    assert reply == expected


@pytest.mark.parametrize("now", ["0012", "12.5", "123456789012345678"])
def test_retry_failed_batch_now_ms_is_written_as_given(r, r2, oracle_tap, q, now):
    assert retry_batch(r, r2, oracle_tap, q, ["F1"], NOW, argv=[now, "2", "GF1", "F1"]) == [
        "GF1", "OK", "F1", "OK"]


def test_retry_failed_batch_non_numeric_count_is_a_script_error(r, r2, oracle_tap, q):
    argv = [str(NOW), "abc", "F1"]
    assert retry_batch(r, r2, oracle_tap, q, ["F1"], NOW, argv=argv) == SCRIPT_ERROR


# --- remove_job ---------------------------------------------------------------------------


def remove(r, r2, oracle, q, jid, lane):
    return run_both(r, r2, oracle, q, "remove_job", "remove_job", anchor_of(q), [jid, lane],
                    queue=q, job_id=jid, lane=lane)


@pytest.mark.parametrize(
    "jid, lane",
    [("W1", "wait"), ("W2", "wait"), ("D1", "delayed"), ("R1", "delayed"), ("GD1", "delayed"),
     ("F1", "failed"), ("GF1", "failed"), ("C1", "completed"), ("C2", "completed"),
     ("G1a", "gwait"), ("G1b", "gwait"), ("G3a", "gwait")],
)
def test_remove_job_from_each_lane(r, r2, oracle_tap, q, jid, lane):
    assert remove(r, r2, oracle_tap, q, jid, lane) == ["OK"]
    assert not r.exists("{" + q + "}:job:" + jid)


def test_remove_job_gwait_reschedules_group(r, r2, oracle_tap, q):
    base = "{" + q + "}"
    # g1 is already offered (at its enqueue time); ZADD NX keeps that score.
    assert remove(r, r2, oracle_tap, q, "G1a", "gwait") == ["OK"]
    # Not ready but still has work and room: offered at score 0.
    on_both(r, r2, "ZREM", base + ":groups:ready", "g1")
    on_both(r, r2, "HINCRBY", base + ":stats", "groups_ready", "-1")
    on_both(r, r2, "RPUSH", base + ":g:g1:wait", "G1x")
    assert remove(r, r2, oracle_tap, q, "G1b", "gwait") == ["OK"]
    assert r.zscore(base + ":groups:ready", "g1") == 0
    # The last job leaves: the group is withdrawn.
    on_both(r, r2, "DEL", base + ":g:g1:wait")
    on_both(r, r2, "RPUSH", base + ":g:g1:wait", "G1c")
    on_both(r, r2, "HSET", base + ":job:G1c", "state", "wait", "gid", "g1")
    assert remove(r, r2, oracle_tap, q, "G1c", "gwait") == ["OK"]
    assert r.zscore(base + ":groups:ready", "g1") is None


def test_remove_job_gwait_full_group_is_withdrawn(r, r2, oracle_tap, q):
    base = "{" + q + "}"
    on_both(r, r2, "SET", base + ":g:g3:inflight", "2")  # g3's limit is 2
    assert remove(r, r2, oracle_tap, q, "G3a", "gwait") == ["OK"]
    assert r.zscore(base + ":groups:ready", "g3") is None
    # ... and withdrawing a group that is not offered changes nothing.
    assert remove(r, r2, oracle_tap, q, "G3b", "gwait") == ["OK"]


@pytest.mark.parametrize("list_left", [True, False])
def test_remove_job_gwait_not_in_lane_still_reoffers(r, r2, oracle_tap, q, list_left):
    # remove_job re-offers (or withdraws) the group even when the id was not in its list,
    # leaving the groups_ready counter as it was.
    base = "{" + q + "}"
    on_both(r, r2, "ZREM", base + ":groups:ready", "g1")
    on_both(r, r2, "LREM", base + ":g:g1:wait", "0", "G1a")
    if not list_left:
        on_both(r, r2, "DEL", base + ":g:g1:wait")
        on_both(r, r2, "ZADD", base + ":groups:ready", "3", "g1")
    assert remove(r, r2, oracle_tap, q, "G1a", "gwait") == ["ERR", "NOT_IN_LANE"]
    assert (r.zscore(base + ":groups:ready", "g1") is not None) == list_left


def test_remove_job_duplicates(r, r2, oracle_tap, q):
    # A reused id sits twice in its list; upstream removes one entry per call.
    assert remove(r, r2, oracle_tap, q, "DUP", "wait") == ["OK"]
    assert remove(r, r2, oracle_tap, q, "GDUP", "gwait") == ["OK"]
    assert r.lrange("{" + q + "}:wait", 0, -1).count(b"DUP") == 1


@pytest.mark.parametrize(
    "jid, lane, reason",
    [
        ("NOPE", "wait", "NO_JOB"),
        ("", "wait", "NO_JOB"),
        ("NOPE", "bogus", "NO_JOB"),
        ("A1", "wait", "ACTIVE"),
        ("GA", "gwait", "ACTIVE"),
        ("A1", "bogus", "ACTIVE"),
        ("W1", "bogus", "LANE_MISMATCH"),
        ("W1", "WAIT", "LANE_MISMATCH"),
        ("W1", "", "LANE_MISMATCH"),
        ("W1", "delayed", "LANE_MISMATCH"),
        ("W1", "gwait", "LANE_MISMATCH"),  # ungrouped
        ("D1", "wait", "LANE_MISMATCH"),
        ("F1", "completed", "LANE_MISMATCH"),
        ("C1", "failed", "LANE_MISMATCH"),
        ("G1a", "delayed", "LANE_MISMATCH"),
        ("G1a", "wait", "NOT_IN_LANE"),  # a grouped job is in its group list, not in wait
        ("GD1", "gwait", "LANE_MISMATCH"),
    ],
)
def test_remove_job_refusals(r, r2, oracle_tap, q, jid, lane, reason):
    assert remove(r, r2, oracle_tap, q, jid, lane) == ["ERR", reason]


@pytest.mark.parametrize("lane, jid", [("wait", "W1"), ("delayed", "D1"), ("failed", "F1"),
                                       ("completed", "C1"), ("gwait", "G1a")])
def test_remove_job_not_in_lane(r, r2, oracle_tap, q, lane, jid):
    base = "{" + q + "}"
    key = {"wait": ":wait", "delayed": ":delayed", "failed": ":failed",
           "completed": ":completed", "gwait": ":g:g1:wait"}[lane]
    on_both(r, r2, "DEL", base + key)
    assert remove(r, r2, oracle_tap, q, jid, lane) == ["ERR", "NOT_IN_LANE"]


@pytest.mark.parametrize("field", ["lease_token", "lock_until_ms"])
def test_remove_job_releases_stale_group_slot(r, r2, oracle_tap, q, field):
    base = "{" + q + "}"
    on_both(r, r2, "SET", base + ":g:g1:inflight", "2")
    for jid in ("G1a", "GD1", "GF1", "C2"):
        on_both(r, r2, "HSET", base + ":job:" + jid, field, "stale")
    assert remove(r, r2, oracle_tap, q, "G1a", "gwait") == ["OK"]
    assert remove(r, r2, oracle_tap, q, "GD1", "delayed") == ["OK"]
    assert r.get(base + ":g:g1:inflight") == b"0"
    # Floor at zero, and the release happens even though the removal fails (§7).
    on_both(r, r2, "DEL", base + ":failed")
    assert remove(r, r2, oracle_tap, q, "GF1", "failed") == ["ERR", "NOT_IN_LANE"]
    assert r.get(base + ":g:g1:inflight") == b"0"
    on_both(r, r2, "SET", base + ":g:g1:inflight", "3")
    on_both(r, r2, "DEL", base + ":completed")
    assert remove(r, r2, oracle_tap, q, "C2", "completed") == ["ERR", "NOT_IN_LANE"]
    assert r.get(base + ":g:g1:inflight") == b"2"
    # ...but not for a lane mismatch.
    assert remove(r, r2, oracle_tap, q, "C2", "failed") == ["ERR", "LANE_MISMATCH"]


@pytest.mark.parametrize("inflight", [None, "0", "0.5", "x", "-3"])
def test_remove_job_stale_slot_odd_inflight(r, r2, oracle_tap, q, inflight):
    base = "{" + q + "}"
    on_both(r, r2, "DEL", base + ":g:g1:inflight")
    if inflight is not None:
        on_both(r, r2, "SET", base + ":g:g1:inflight", inflight)
    on_both(r, r2, "HSET", base + ":job:G1a", "lease_token", "stale")
    reply = remove(r, r2, oracle_tap, q, "G1a", "gwait")
    # DECR refuses a non-integer, on both sides alike.
    assert reply == (SCRIPT_ERROR if inflight in ("0.5", "x") else ["OK"])


def test_stats_fields_created_in_upstream_order(r, r2, oracle_tap, q):
    # Hash field order is part of the keyspace: a missing stats hash is rebuilt the same way.
    stats = "{" + q + "}:stats"
    for jid in ("F1", "GF1"):
        on_both(r, r2, "DEL", stats)
        retry(r, r2, oracle_tap, q, jid, NOW + 1000)
    on_both(r, r2, "DEL", stats)
    retry_batch(r, r2, oracle_tap, q, ["F2", "GF2"], NOW + 1001)
    on_both(r, r2, "DEL", stats)
    on_both(r, r2, "ZREM", "{" + q + "}:groups:ready", "g1", "g3")
    on_both(r, r2, "HSET", "{" + q + "}:job:GF1", "state", "failed")
    on_both(r, r2, "HSET", "{" + q + "}:job:F1", "state", "failed")
    retry_batch(r, r2, oracle_tap, q, ["GF1", "F1"], NOW + 1002)
    for jid, lane in (("W1", "wait"), ("G1a", "gwait"), ("D1", "delayed"), ("C1", "completed"),
                      ("F1", "wait")):
        on_both(r, r2, "DEL", stats)
        remove(r, r2, oracle_tap, q, jid, lane)
    on_both(r, r2, "DEL", stats)
    on_both(r, r2, "ZREM", "{" + q + "}:groups:ready", "g1", "g3")
    remove_batch(r, r2, oracle_tap, q, "gwait", ["G1b", "G3a"])


@pytest.mark.parametrize("jid", ["W1", "A1", "NOPE"])
def test_remove_job_without_lane(r, r2, oracle_tap, q, jid):
    run_both(r, r2, oracle_tap, q, "remove_job", "remove_job", anchor_of(q), [jid],
             override=True, queue=q, job_id=jid, lane="wait")


def test_remove_job_odd_hashes(r, r2, oracle_tap, q):
    base = "{" + q + "}"
    on_both(r, r2, "HSET", base + ":job:ODD", "payload", "{}")
    on_both(r, r2, "RPUSH", base + ":wait", "ODD")
    on_both(r, r2, "HSET", base + ":job:W2", "gid", "")
    on_both(r, r2, "HDEL", base + ":stats", "waiting", "waiting_total")
    for jid, lane in (("ODD", "wait"), ("W2", "gwait"), ("W2", "wait"), ("W1", "wait")):
        remove(r, r2, oracle_tap, q, jid, lane)


# --- remove_jobs_batch ---------------------------------------------------------------------


def remove_batch(r, r2, oracle, q, lane, ids, argv=None):
    argv_ = argv if argv is not None else [lane, str(len(ids)), *ids]
    return run_both(r, r2, oracle, q, "remove_jobs_batch", "remove_jobs_batch", anchor_of(q),
                    argv_, override=argv is not None, queue=q, lane=lane, job_ids=list(ids))


@pytest.mark.parametrize("lane", LANES)
def test_remove_jobs_batch_mixed(r, r2, oracle_tap, q, lane):
    ids = ["W1", "", "NOPE", "A1", "D1", "F1", "C1", "G1a", "G3a", "GDUP", "DUP", "DUP",
           "G1b", "R1", "GF1", "W2", "C2", "GA", "GD1", "GDUP"]
    reply = remove_batch(r, r2, oracle_tap, q, lane, ids)
    assert "OK" in reply
    assert "BAD_JOB_ID" in reply


def test_remove_jobs_batch_gwait_groups(r, r2, oracle_tap, q):
    base = "{" + q + "}"
    on_both(r, r2, "ZREM", base + ":groups:ready", "g1")
    on_both(r, r2, "SET", base + ":g:g3:inflight", "2")
    reply = remove_batch(r, r2, oracle_tap, q, "gwait", ["G1a", "G3a", "G3b", "GDUP", "GDUP"])
    # The first GDUP deletes the job hash, so its second list entry is orphaned.
    assert reply == ["G1a", "OK", "G3a", "OK", "G3b", "OK", "GDUP", "OK", "GDUP", "ERR", "NO_JOB"]


@pytest.mark.parametrize("list_left", [True, False])
def test_remove_jobs_batch_gwait_not_in_lane_leaves_group(r, r2, oracle_tap, q, list_left):
    # Unlike remove_job, the batch touches groups:ready only for ids it removed.
    base = "{" + q + "}"
    on_both(r, r2, "ZREM", base + ":groups:ready", "g1")
    on_both(r, r2, "LREM", base + ":g:g1:wait", "0", "G1a")
    if not list_left:
        on_both(r, r2, "DEL", base + ":g:g1:wait")
        on_both(r, r2, "ZADD", base + ":groups:ready", "3", "g1")
    assert remove_batch(r, r2, oracle_tap, q, "gwait", ["G1a"]) == ["G1a", "ERR", "NOT_IN_LANE"]
    assert remove_batch(r, r2, oracle_tap, q, "gwait", ["G1a", "G3a"]) == [
        "G1a", "ERR", "NOT_IN_LANE", "G3a", "OK"]


def test_remove_jobs_batch_gwait_reoffers_at_score_0(r, r2, oracle_tap, q):
    base = "{" + q + "}"
    on_both(r, r2, "ZREM", base + ":groups:ready", "g1")
    argv = ["gwait", "1", "G1a", str(NOW + 5)]
    assert remove_batch(r, r2, oracle_tap, q, "gwait", ["G1a"], argv=argv) == ["G1a", "OK"]
    assert r.zscore(base + ":groups:ready", "g1") == 0


def test_remove_jobs_batch_all_refused_is_not_activity(r, r2, oracle_tap, q):
    on_both(r, r2, "HSET", "{" + q + "}:stats", "last_activity_ms", "123")
    assert remove_batch(r, r2, oracle_tap, q, "wait", ["NOPE", "A1", "D1"]) == [
        "NOPE", "ERR", "NO_JOB", "A1", "ERR", "ACTIVE", "D1", "ERR", "LANE_MISMATCH"]


def test_remove_jobs_batch_stale_group_slot(r, r2, oracle_tap, q):
    base = "{" + q + "}"
    on_both(r, r2, "SET", base + ":g:g1:inflight", "1")
    on_both(r, r2, "HSET", base + ":job:G1a", "lease_token", "stale")
    on_both(r, r2, "HSET", base + ":job:G1b", "lock_until_ms", "1")
    on_both(r, r2, "LREM", base + ":g:g1:wait", "0", "G1b")
    assert remove_batch(r, r2, oracle_tap, q, "gwait", ["G1b", "G1a"]) == [
        "G1b", "ERR", "NOT_IN_LANE", "G1a", "OK"]


def test_remove_jobs_batch_empty_and_bad_lane(r, r2, oracle_tap, q):
    assert remove_batch(r, r2, oracle_tap, q, "wait", []) == []
    assert remove_batch(r, r2, oracle_tap, q, "bogus", []) == []  # size checks come first
    assert remove_batch(r, r2, oracle_tap, q, "bogus", ["W1"]) == ["ERR", "BAD_LANE"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["wait", "101", *["W1"] * 101], ["ERR", "BATCH_TOO_LARGE", "100"]),
        (["bogus", "101"], ["ERR", "BATCH_TOO_LARGE", "100"]),
        (["bogus", "2", "W1"], ["ERR", "BAD_LANE"]),  # lane before BAD_ARGS
        (["wait", "2", "W1"], ["ERR", "BAD_ARGS"]),
        (["wait", "1"], ["ERR", "BAD_ARGS"]),
        (["wait", "2.5", "W1", "W2"], ["ERR", "BAD_ARGS"]),
        (["bogus", "0", "W1"], []),
        (["bogus"], []),  # no count reads as 0
        ([], []),
        (["bogus", "-3"], []),
        (["wait", "0.5", "W1"], []),
        (["wait", "1.5", "W1", "W2"], ["W1", "OK"]),
        # the optional trailing now_ms stamps last_activity_ms
        (["wait", "1", "W1", str(NOW + 5)], ["W1", "OK"]),
        (["wait", "1", "W1", str(NOW + 5), "junk"], ["W1", "OK"]),
        (["wait", "2", "W1", "W2", "17"], ["W1", "OK", "W2", "OK"]),
        (["wait", "1.5", "W1", "W2", "17"], ["W1", "OK"]),
        (["wait", "1", "NOPE", str(NOW + 5)], ["NOPE", "ERR", "NO_JOB"]),
        (["wait", "1", "W1", "0012"], ["W1", "OK"]),
        (["wait", "1", "W1", "12.5"], ["W1", "OK"]),
        (["wait", "1", "W1", ""], ["W1", "OK"]),
        (["wait", "1", "W1", "123456789012345678"], ["W1", "OK"]),
    ],
)
def test_remove_jobs_batch_script_arguments(r, r2, oracle_tap, q, argv, expected):
    assert remove_batch(r, r2, oracle_tap, q, "wait", ["W1"], argv=argv) == expected


# --- childs_init / child_ack ----------------------------------------------------------------


def init(r, r2, oracle, k, expected, argv=None):
    argv_ = argv if argv is not None else [str(expected)]
    return run_both(r, r2, oracle, k, "childs_init", "childs_init", counter_anchor_of(k), argv_,
                    override=argv is not None, key=k, expected=expected)


def ack(r, r2, oracle, k, child, argv=None):
    argv_ = argv if argv is not None else [child]
    return run_both(r, r2, oracle, k, "child_ack", "child_ack", counter_anchor_of(k), argv_,
                    override=argv is not None, key=k, child_id=child or "x")


def test_childs_init_and_count_down(r, r2, oracle_tap, qname):
    k = qname
    assert init(r, r2, oracle_tap, k, 3) == ["OK"]
    assert init(r, r2, oracle_tap, k, 5) == ["ERR", "ALREADY_INIT"]
    assert ack(r, r2, oracle_tap, k, "a") == ["OK", "2"]
    assert ack(r, r2, oracle_tap, k, "a") == ["OK", "2"]  # a retried child counts once
    assert ack(r, r2, oracle_tap, k, "b") == ["OK", "1"]
    assert ack(r, r2, oracle_tap, k, "c") == ["OK", "0"]  # the last child, exactly once
    assert not r.exists("{cc:" + k + "}:count", "{cc:" + k + "}:done")
    assert ack(r, r2, oracle_tap, k, "c") == ["ERR", "NO_COUNTER"]
    assert ack(r, r2, oracle_tap, k, "d") == ["ERR", "NO_COUNTER"]
    assert init(r, r2, oracle_tap, k, 1) == ["OK"]  # reusable once done
    assert ack(r, r2, oracle_tap, k, "a") == ["OK", "0"]


def test_childs_init_clears_old_done_set(r, r2, oracle_tap, qname):
    on_both(r, r2, "SADD", "{cc:" + qname + "}:done", "a", "b")
    assert init(r, r2, oracle_tap, qname, 2) == ["OK"]
    assert ack(r, r2, oracle_tap, qname, "a") == ["OK", "1"]


@pytest.mark.parametrize("expected", [0, -1, -5])
def test_childs_init_bad_expected(r, r2, oracle_tap, qname, expected):
    assert init(r, r2, oracle_tap, qname, expected) == ["ERR", "BAD_EXPECTED"]


@pytest.mark.parametrize(
    "argv, reply",
    [
        ([], ["ERR", "NO_EXPECTED"]),
        ([""], ["ERR", "NO_EXPECTED"]),
        (["abc"], ["ERR", "BAD_EXPECTED"]),
        (["0.5"], ["ERR", "BAD_EXPECTED"]),
        (["-0"], ["ERR", "BAD_EXPECTED"]),
        (["-inf"], ["ERR", "BAD_EXPECTED"]),
        # Anything Lua reads as a positive number is floored and stored as Lua prints it.
        (["2.5"], ["OK"]),
        (["1.9"], ["OK"]),
        ([" 3 "], ["OK"]),
        (["+5"], ["OK"]),
        (["0x10"], ["OK"]),
        (["1e1"], ["OK"]),
        (["123456789012345"], ["OK"]),
        (["1e20"], ["OK"]),
        (["inf"], ["OK"]),
        (["nan"], ["OK"]),
    ],
)
def test_childs_init_script_arguments(r, r2, oracle_tap, qname, argv, reply):
    assert init(r, r2, oracle_tap, qname, 1, argv=argv) == reply


def test_childs_init_checks_expected_before_existing(r, r2, oracle_tap, qname):
    assert init(r, r2, oracle_tap, qname, 2) == ["OK"]
    assert init(r, r2, oracle_tap, qname, 2, argv=["x"]) == ["ERR", "BAD_EXPECTED"]
    assert init(r, r2, oracle_tap, qname, 2, argv=[]) == ["ERR", "NO_EXPECTED"]


@pytest.mark.parametrize("argv", [[], [""]])
def test_child_ack_child_required(r, r2, oracle_tap, qname, argv):
    assert ack(r, r2, oracle_tap, qname, "", argv=argv) == ["ERR", "CHILD_REQUIRED"]
    assert init(r, r2, oracle_tap, qname, 2) == ["OK"]
    assert ack(r, r2, oracle_tap, qname, "", argv=argv) == ["ERR", "CHILD_REQUIRED"]


@pytest.mark.parametrize(
    "count, child, reply",
    [
        ("3", "z", ["OK", "3"]),  # z already counted: current count, no decrement
        ("-2", "z", ["OK", "0"]),
        ("abc", "z", ["OK", "0"]),
        ("", "z", ["OK", "0"]),
        ("2.5", "z", ["OK", "2"]),
        ("07", "z", ["OK", "7"]),
        ("123456789012345", "z", ["OK", "1.2345678901234e+14"]),
        ("-2", "y", ["OK", "0"]),  # new child below zero: deletes the counter
        ("123456789012345", "y", ["OK", "1.2345678901234e+14"]),
    ],
)
def test_child_ack_odd_counters(r, r2, oracle_tap, qname, count, child, reply):
    base = "{cc:" + qname + "}"
    on_both(r, r2, "SET", base + ":count", count)
    on_both(r, r2, "SADD", base + ":done", "z")
    assert ack(r, r2, oracle_tap, qname, child) == reply


@pytest.mark.parametrize("count", ["abc", "2.5", "07"])
def test_child_ack_unparsable_counter_is_a_script_error(r, r2, oracle_tap, qname, count):
    # DECR refuses these; like upstream the child is recorded before the error.
    base = "{cc:" + qname + "}"
    on_both(r, r2, "SET", base + ":count", count)
    assert ack(r, r2, oracle_tap, qname, "y") == SCRIPT_ERROR
    assert r.sismember(base + ":done", "y")


# --- random mixes ---------------------------------------------------------------------------

ids = st.sampled_from(JOB_IDS + ("NOPE", ""))
lanes = st.sampled_from(LANES + ("bogus",))
ops = st.one_of(
    st.tuples(st.just("retry_failed"), ids),
    st.tuples(st.just("retry_failed_batch"), st.lists(ids, max_size=6)),
    st.tuples(st.just("remove_job"), ids, lanes),
    st.tuples(st.just("remove_jobs_batch"), lanes, st.lists(ids, max_size=6)),
    st.tuples(st.just("childs_init"), st.integers(-1, 4)),
    st.tuples(st.just("child_ack"), st.sampled_from("abcdef")),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(ops, min_size=1, max_size=12))
def test_random_admin_mixes(r, r2, oracle_tap, setup_clients, qname, steps):
    q = qname + uuid.uuid4().hex[:8]
    try:
        for c in setup_clients:
            prepare(c, q)
        for i, (name, *args) in enumerate(steps):
            now = NOW + 1000 + i
            if name == "retry_failed":
                retry(r, r2, oracle_tap, q, args[0], now)
            elif name == "retry_failed_batch":
                retry_batch(r, r2, oracle_tap, q, args[0], now)
            elif name == "remove_job":
                if remove(r, r2, oracle_tap, q, args[0], args[1]) == ["OK"]:
                    same_activity_stamp(r, r2, q)
            elif name == "remove_jobs_batch":
                remove_batch(r, r2, oracle_tap, q, args[0], args[1])
            elif name == "childs_init":
                init(r, r2, oracle_tap, q, args[0])
            else:
                ack(r, r2, oracle_tap, q, args[0])
    finally:
        for conn in (r, r2):
            delete_prefixed(conn, "{" + q, "{cc:" + q)
