"""Random call sequences over every operation: omniq-fast vs the official SDK.

Each hypothesis example runs on a fresh queue: the same calls go to both clients (fixed job
ids, increasing ``now`` overrides), their answers must correspond, and after every call
the two keyspaces must be identical.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Pair
from omniq_fast import Client, DuplicateJob, OmniqClient
from support import snapshot

EXAMPLES = int(os.environ.get("OMNIQ_FAST_CONFORMANCE_EXAMPLES", "200"))

JOB_IDS = [f"j{i}" for i in range(6)]
GIDS = [None, "g1", "g2"]
LANES = ["wait", "delayed", "failed", "completed", "gwait"]

json_leaf = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
    st.booleans(),
    st.none(),
)
json_payload = st.one_of(
    st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), max_size=5), json_leaf, max_size=3),
    st.lists(json_leaf, max_size=3),
)


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """A list of (operation, keyword arguments) without ``queue``/``now`` (added later)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for _ in range(draw(st.integers(3, 18))):
        op = draw(
            st.sampled_from(
                ["publish"] * 5
                + ["reserve"] * 4
                + ["ack_success"] * 3
                + ["ack_fail"] * 3
                + ["heartbeat", "promote_delayed", "reap_expired", "pause", "resume",
                   "is_paused", "retry_failed", "retry_failed_batch", "remove_job",
                   "remove_jobs_batch", "childs_init", "child_ack"]
            )
        )  # fmt: skip
        kw: dict[str, Any] = {"_advance": draw(st.sampled_from([0, 1, 500, 5_000, 40_000]))}
        if op == "publish":
            gid = draw(st.sampled_from(GIDS))
            kw.update(
                job_id=draw(st.sampled_from(JOB_IDS)),
                payload=draw(json_payload),
                gid=gid,
                group_limit=draw(st.sampled_from([0, 1, 2])) if gid else 0,
                max_attempts=draw(st.sampled_from([1, 2, 3])),
                timeout_ms=draw(st.sampled_from([1_000, 30_000])),
                backoff_ms=draw(st.sampled_from([0, 1_000])),
                _due_in=draw(st.sampled_from([0, 0, 0, 2_000])),
            )
        elif op in ("heartbeat", "ack_success", "ack_fail"):
            kw.update(_lease=draw(st.integers(0, 7)))
            if op == "ack_fail":
                kw.update(error=draw(st.sampled_from([None, "", "boom", "x" * 5000])))
        elif op == "promote_delayed":
            kw.update(max_promote=draw(st.integers(1, 4)))
        elif op == "reap_expired":
            kw.update(max_reap=draw(st.integers(1, 4)))
        elif op == "retry_failed":
            kw.update(job_id=draw(st.sampled_from(JOB_IDS)))
        elif op == "retry_failed_batch":
            kw.update(job_ids=draw(st.lists(st.sampled_from(JOB_IDS + [""]), max_size=4)))
        elif op == "remove_job":
            kw.update(job_id=draw(st.sampled_from(JOB_IDS)), lane=draw(st.sampled_from(LANES)))
        elif op == "remove_jobs_batch":
            kw.update(
                lane=draw(st.sampled_from(LANES)),
                job_ids=draw(st.lists(st.sampled_from(JOB_IDS + [""]), max_size=4)),
            )
        elif op == "childs_init":
            kw.update(key=draw(st.sampled_from(["c1", "c2"])), expected=draw(st.integers(1, 3)))
        elif op == "child_ack":
            kw.update(
                key=draw(st.sampled_from(["c1", "c2"])),
                child_id=draw(st.sampled_from(["a", "b", "c"])),
            )
        out.append((op, kw))
    return out


NO_NOW = {"pause", "resume", "is_paused", "remove_job", "remove_jobs_batch",
          "childs_init", "child_ack"}  # fmt: skip
COUNTER_OPS = {"childs_init", "child_ack"}


def run_sequence(pair: Pair, queue: str, seq: list[tuple[str, dict[str, Any]]]) -> None:
    now = 1_700_000_000_000
    leases: list[tuple[str, str]] = []  # (job_id, token) handed out so far, both sides equal
    for op, raw in seq:
        kw = dict(raw)
        now += kw.pop("_advance")
        due_in = kw.pop("_due_in", 0)
        lease = kw.pop("_lease", None)
        if op in COUNTER_OPS:
            kw["key"] = queue + kw["key"]
        else:
            kw["queue"] = queue
        if op not in NO_NOW:
            kw["now_ms_override"] = now
        if due_in:
            kw["due_ms"] = now + due_in
        if lease is not None:
            if lease < len(leases):
                kw["job_id"], kw["lease_token"] = leases[lease]
            else:  # a token nobody holds
                kw["job_id"], kw["lease_token"] = JOB_IDS[lease % len(JOB_IDS)], "f" * 40
        if op == "publish" and pair.r.exists("{" + queue + "}:job:" + kw["job_id"]):
            # The one documented divergence (README "Deliberate divergences"): the official
            # SDK overwrites an existing job and queues it again; ours refuses the id and
            # writes nothing. The oracle is not called, so the keyspaces stay comparable.
            before = snapshot(pair.r, "{" + queue + "}")
            with pytest.raises(DuplicateJob):
                pair.ours.publish(**kw)
            assert snapshot(pair.r, "{" + queue + "}") == before
            pair.log.append(f"publish({kw}) -> DuplicateJob (ours only)")
            continue
        result = pair.call(op, **kw)
        if op == "reserve" and getattr(result, "status", None) == "JOB":
            leases.append((result.job_id, result.lease_token))
        pair.assert_same_keyspace()


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seq=steps())
def test_random_sequences_match_the_official_sdk(
    seq: list[tuple[str, dict[str, Any]]], qname: str, r: Any, r2: Any, oracle: Any,
    redis_url: str, core: Any, shell: Any,
) -> None:  # fmt: skip
    ours = OmniqClient(redis=r, _core=core) if shell is Client else shell(redis=r, _core=core)
    pair = Pair(ours, oracle, r, r2, "{" + qname, "{cc:" + qname)
    try:
        run_sequence(pair, qname, seq)
    finally:
        pair.cleanup()
        ours.close()
