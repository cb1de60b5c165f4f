"""The consumer's pure core, without a server: what Dispatcher and LeaseBook decide for
given replies and clocks (the real-server behaviour is in tests/test_consumer*.py)."""

from __future__ import annotations

from typing import Any

import pytest

from omniq_fast import _core_py as core
from omniq_fast._protocol.dispatch import Dispatcher, Trip
from omniq_fast._protocol.effects import HoldBeats, Release, ResumeBeats, StartBeats, StopBeats
from omniq_fast._protocol.leases import LeaseBook
from omniq_fast.errors import ConnectionLost, reply_error
from omniq_fast.types import JobResult

NOW_MS = 1_700_000_000_000


def dispatcher(**options: Any) -> Dispatcher:
    settings: dict[str, Any] = dict(
        concurrency=1, prefetch=64, max_jobs=None, poll_interval_s=0.05,
        promote_interval_s=1.0, promote_batch=1000, reap_interval_s=1.0, reap_batch=1000,
        heartbeat_interval_s=None, ack_delay_s=0.002, burst=False, verbose=False,
        observed=False,
    )  # fmt: skip
    settings.update(options)
    return Dispatcher(core, "q", lambda job_id: None, **settings)


def jobs_reply(*jobs: tuple[str, int]) -> list[Any]:
    """A reserve_batch reply leasing ``(job_id, attempt)`` jobs for 30 s."""
    reply: list[Any] = [b"JOB", len(jobs)]
    for job_id, attempt in jobs:
        reply += [job_id.encode(), b"{}", NOW_MS + 30_000, attempt, 3, b"", b"tok-" + job_id.encode()]
    return reply


def kinds(trip: Trip) -> list[str]:
    return [kind for kind, _ in trip.steps]


def reserve_one(d: Dispatcher, now: float = 0.0) -> Trip:
    trip = d.plan(now, NOW_MS, False)
    assert trip is not None and kinds(trip)[-1] == "reserve"
    replies = [0] * (len(trip.steps) - 1) + [jobs_reply(("a", 1))]
    d.replied(trip, replies, now)
    return trip


def test_an_idle_consumer_promotes_reaps_and_reserves_one() -> None:
    d = dispatcher()
    trip = d.plan(0.0, NOW_MS, False)
    assert trip is not None and kinds(trip) == ["promote_delayed", "reap_expired", "reserve"]
    assert trip.steps[-1] == ("reserve", NOW_MS)
    assert trip.calls[-1][1].startswith(b"*6\r\n$7\r\nEVALSHA")


def test_reserved_jobs_start_beating_and_run_then_ack_with_the_next_reserve() -> None:
    d = dispatcher()
    reserve_one(d)
    effects = d.take_effects()
    assert any(isinstance(e, StartBeats) and e.interval == 10.0 for e in effects)  # 30 s / 3
    ctx = d.next_job(False)
    assert ctx is not None and ctx.job_id == "a" and d.next_job(False) is None
    d.finished(ctx, None, 0.001, 0.01)
    trip = d.plan(0.01, NOW_MS, False)
    assert trip is not None and kinds(trip) == ["ack_ok", "reserve"]  # promote/reap not due
    assert isinstance(d.take_effects()[0], HoldBeats)
    d.replied(trip, [[b"OK"], [b"EMPTY"]], 0.02)
    assert d.stats.succeeded == 1
    assert any(isinstance(e, StopBeats) and e.job_ids == ["a"] for e in d.take_effects())


def test_acks_of_a_lost_round_trip_go_again_and_a_refusal_then_is_unknown() -> None:
    d = dispatcher()
    reserve_one(d)
    ctx = d.next_job(False)
    assert ctx is not None
    d.finished(ctx, None, 0.001, 0.01)
    trip = d.plan(0.01, NOW_MS, False)
    assert trip is not None
    d.lost(trip, ConnectionLost("cut"), 0.02)
    assert any(isinstance(e, ResumeBeats) for e in d.take_effects())
    assert d.retry_at is not None and d.plan(0.02, NOW_MS, False) is None  # backing off
    again = d.plan(d.retry_at, NOW_MS, False)
    assert again is not None and kinds(again) == ["ack_ok", "reserve"]
    d.replied(again, [[b"NOT_ACTIVE"], [b"EMPTY"]], d.retry_at)
    assert d.stats.ack_unknown == 1 and d.stats.lease_lost == 0 and d.retry_at is None


def test_an_ack_that_did_not_run_goes_again_and_a_refusal_then_is_a_lost_lease() -> None:
    d = dispatcher()
    reserve_one(d)
    ctx = d.next_job(False)
    assert ctx is not None
    d.finished(ctx, "ValueError: x", 0.001, 0.01)
    trip = d.plan(0.01, NOW_MS, False)
    assert trip is not None and kinds(trip) == ["ack_fail", "reserve"]
    d.replied(trip, [reply_error("LOADING loading"), [b"EMPTY"]], 0.02)
    assert d.retry_at is not None
    again = d.plan(d.retry_at, NOW_MS, False)
    assert again is not None
    d.replied(again, [[b"ERR", b"TOKEN_MISMATCH"], [b"EMPTY"]], d.retry_at)
    assert d.stats.lease_lost == 1 and ctx.lease_lost and d.stats.ack_unknown == 0


def test_a_job_that_ran_before_runs_alone() -> None:
    d = dispatcher(concurrency=4)
    trip = d.plan(0.0, NOW_MS, False)
    assert trip is not None
    d.replied(trip, [0, 0, jobs_reply(("a", 1), ("b", 2), ("c", 1))], 0.0)
    released = [e for e in d.take_effects() if isinstance(e, Release)]
    assert [c.job_id for c in released[0].ctxs] == ["a", "c"]
    assert released[0].isolating is not None and released[0].isolating.job_id == "b"
    ctx = d.next_job(False)
    assert ctx is not None and ctx.job_id == "b"
    assert d.plan(0.001, NOW_MS, False) is None  # nothing more is reserved meanwhile


def test_stopping_gives_back_what_never_started() -> None:
    d = dispatcher(concurrency=2)
    trip = d.plan(0.0, NOW_MS, False)
    assert trip is not None
    d.replied(trip, [0, 0, jobs_reply(("a", 1), ("b", 1))], 0.0)
    d.take_effects()
    ctx = d.next_job(False)
    assert ctx is not None
    d.finished(ctx, None, -1.0, 0.01)  # a worker gave it back unstarted
    d.give_back()
    released = [e for e in d.take_effects() if isinstance(e, Release)]
    assert [c.job_id for c in released[0].ctxs] == ["a", "b"] and released[0].isolating is None


def test_acks_wait_for_the_ack_delay_while_jobs_run() -> None:
    d = dispatcher(concurrency=2, ack_delay_s=0.5, max_jobs=2)
    trip = d.plan(0.0, NOW_MS, False)
    assert trip is not None
    d.replied(trip, [0, 0, jobs_reply(("a", 1), ("b", 1))], 0.0)
    first, second = d.next_job(False), d.next_job(False)
    assert first is not None and second is not None
    d.finished(first, None, 0.01, 0.1)
    assert d.plan(0.2, NOW_MS, False) is None  # b still runs, and nothing is to be reserved
    due = d.plan(0.6, NOW_MS, False)
    assert due is not None and "ack_ok" in kinds(due)


def test_more_than_1000_acks_go_in_calls_of_1000() -> None:
    d = dispatcher(concurrency=1500, prefetch=0)
    trip = d.plan(0.0, NOW_MS, False)
    assert trip is not None
    d.replied(trip, [0, 0, jobs_reply(*[(f"j{i}", 1) for i in range(1000)])], 0.0)
    trip = d.plan(0.0, NOW_MS, False)
    assert trip is not None
    d.replied(trip, [jobs_reply(*[(f"k{i}", 1) for i in range(200)])], 0.0)
    while (ctx := d.next_job(False)) is not None:
        d.finished(ctx, None, 0.001, 0.01)
    acks = d.plan(0.01, NOW_MS, True)
    assert acks is not None and kinds(acks) == ["ack_ok", "ack_ok"]
    assert [len(arg) for _, arg in acks.steps] == [1000, 200]


def test_the_lease_book_beats_what_is_due_and_drops_what_was_lost() -> None:
    d = dispatcher()
    reserve_one(d)
    (start,) = [e for e in d.take_effects() if isinstance(e, StartBeats)]
    book = LeaseBook(core, "q")
    assert book.add(start.ctxs, start.interval, 0.0) == 10.0
    assert book.due(9.9) == [] and book.next_due() == 10.0
    due = book.due(10.0)
    plan = book.beat_plan(due, NOW_MS)
    assert len(plan.calls) == 1 and plan.calls[0].script is not None
    book.beat_failed(due, 10.0)
    assert 10.0 < (book.next_due() or 0) <= 10.01  # backoff, never past the next beat
    lost = book.beaten(due, [JobResult("a", "ERR", None, "NOT_ACTIVE")], 10.5)
    assert [(c.job_id, r) for c, r in lost] == [("a", "NOT_ACTIVE")] and start.ctxs[0].lease_lost
    assert book.next_due() is None


def test_held_leases_are_not_beaten_until_resumed() -> None:
    d = dispatcher()
    reserve_one(d)
    (start,) = [e for e in d.take_effects() if isinstance(e, StartBeats)]
    book = LeaseBook(core, "q")
    book.add(start.ctxs, start.interval, 0.0)
    book.hold(["a"])
    assert book.due(100.0) == []
    assert book.resume(["a"]) and len(book.due(100.0)) == 1
    book.drop(["a"])
    assert book.next_due() is None


# ----------------------------------------------------------------- trips ahead (overlap)


def _with_handler_time(d: Dispatcher) -> None:
    """Run one job so the prefetch cap opens (fast handlers: the full 64)."""
    reserve_one(d)
    ctx = d.next_job(False)
    assert ctx is not None
    d.finished(ctx, None, 1e-6, 0.0)
    d.take_effects()


def test_trips_go_ahead_only_while_jobs_are_in_hand_and_count_what_they_bring() -> None:
    d = dispatcher()
    _with_handler_time(d)
    first = d.plan(0.0, NOW_MS, False, ahead=True)
    assert first is not None and first.asked == 65  # 1 worker + 64 prefetched
    assert d.plan(0.0, NOW_MS, False, ahead=True) is None  # nothing ready: wait for it
    ids = [(f"j{i}", 1) for i in range(65)]
    d.replied(first, [[b"OK"], jobs_reply(*ids)], 0.0)
    # 20 run: room for 20, but a second trip is planned ahead only with ``ahead``.
    for _ in range(20):
        ctx = d.next_job(False)
        assert ctx is not None
        d.finished(ctx, None, 1e-6, 0.0)
    second = d.plan(0.0, NOW_MS, False, ahead=True)
    assert second is not None and second.asked == 20
    assert d.plan(0.0, NOW_MS, False) is None  # one unanswered: none more without ahead
    for _ in range(20):
        ctx = d.next_job(False)
        assert ctx is not None
        d.finished(ctx, None, 1e-6, 0.0)
    # The 20 coming count as in hand: the third asks for what the last 20 freed.
    third = d.plan(0.0, NOW_MS, False, ahead=True)
    assert third is not None and third.asked == 20 and kinds(third) == ["ack_ok", "reserve"]
    assert d.plan(0.0, NOW_MS, False, ahead=True) is None  # AHEAD (2) unanswered at most
    assert not d.should_stop()
    with pytest.raises(AssertionError, match="in order"):
        d.replied(third, [[b"OK"] * 20, [b"EMPTY"]], 0.0)  # before the second: refused


def test_a_job_to_run_alone_sends_back_what_a_trip_ahead_brings() -> None:
    d = dispatcher()
    _with_handler_time(d)
    first = d.plan(0.0, NOW_MS, False, ahead=True)
    assert first is not None
    d.replied(first, [[b"OK"], jobs_reply(("a1", 1), ("a2", 1))], 0.0)
    second = d.plan(0.0, NOW_MS, False, ahead=True)  # ahead: jobs are in hand
    assert second is not None and second.asked > 0
    # The job that ran before comes in the second trip's reply, after two fresh ones
    # and before one more: everything but it goes back, the earlier jobs still waiting
    # included, and it runs alone.
    d.take_effects()
    d.replied(second, [jobs_reply(("b1", 1), ("suspect", 2), ("b2", 1))], 0.0)
    released = [e for e in d.take_effects() if isinstance(e, Release)]
    assert [sorted(c.job_id for c in e.ctxs) for e in released] == [["a1", "a2", "b1", "b2"]]
    ctx = d.next_job(False)
    assert ctx is not None and ctx.job_id == "suspect" and d.next_job(False) is None
