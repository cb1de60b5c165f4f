"""The idle consumer's pure decisions (omniq_fast._protocol.idle): no server, no clock."""

from __future__ import annotations

import itertools

from omniq_fast._protocol.idle import (
    IDLE_POLL_S, Change, IdleTimers, change_of, tracked_prefixes, tracking_command,
)  # fmt: skip


def test_the_tracked_prefixes_cover_the_reservable_keys_and_do_not_overlap() -> None:
    prefixes = tracked_prefixes("q")
    assert prefixes == ["{q}:wait", "{q}:groups:ready", "{q}:paused", "{q}:delayed",
                        "{q}:active"]  # fmt: skip
    for a, b in itertools.permutations(prefixes, 2):
        assert not a.startswith(b)  # the server refuses overlapping prefixes
    command = tracking_command(42, "q")
    assert command[:6] == ("CLIENT", "TRACKING", "ON", "REDIRECT", "42", "BCAST")
    assert command[6:] == tuple(x for p in prefixes for x in ("PREFIX", p))


def test_what_an_invalidation_means() -> None:
    assert change_of("q", [b"{q}:wait"]) == Change(True, False, False)
    assert change_of("q", [b"{q}:groups:ready", b"{q}:paused"]) == Change(True, False, False)
    assert change_of("q", [b"{q}:delayed"]) == Change(False, True, False)
    assert change_of("q", [b"{q}:active", b"{q}:delayed"]) == Change(False, True, True)
    everything = Change(True, True, True)
    assert change_of("q", None) == everything  # FLUSHALL / FLUSHDB
    assert change_of("q", [b"{other}:wait"]) == everything  # not ours: assume the worst
    assert change_of("q", [b"{q}:waiting"]) == everything


def test_untracked_timers_run_at_fixed_intervals() -> None:
    t = IdleTimers(0.05, 1.0, 2.0)
    assert t.due(100.0) == ["promote_delayed", "reap_expired"]
    assert t.due(100.5) == []
    assert t.next_at(100.5) == 101.0
    assert t.due(101.0) == ["promote_delayed"]
    assert t.due(102.0) == ["promote_delayed", "reap_expired"]
    assert not t.wants_read(102.0)
    assert t.poll_gap(False) == 0.05 and t.poll_gap(True) == 0.5


def test_tracked_timers_follow_the_server() -> None:
    t = IdleTimers(0.05, 1.0, 1.0)
    t.arm(True)
    assert t.poll_gap(False) == t.poll_gap(True) == IDLE_POLL_S
    assert t.next_at(10.0) == 10.0  # read at once after arming
    assert t.wants_read(10.0) and not t.wants_read(10.0)
    # Earliest delayed job due 250 ms after the read was sent, a lease expiring in 3 s.
    t.read([b"1000250", b"1003000"], 1_000_000, 10.001)
    assert t.due(10.2) == []
    assert t.next_at(10.2) == 10.251
    assert t.due(10.251) == ["promote_delayed"]
    assert t.wants_read(10.251)  # what the promote left is read in the same trip
    t.read([b"", b"1003000"], 1_000_251, 10.252)
    assert t.next_at(10.3) == 10.252 + 2.749
    assert t.due(13.0) == []
    assert t.due(13.01) == ["reap_expired"]


def test_lease_changes_are_read_at_most_once_per_reap_interval() -> None:
    t = IdleTimers(0.05, 1.0, 1.0)
    t.arm(True)
    assert t.wants_read(0.0)
    t.read([b"", b""], 0, 0.0)
    t.leases_stale = True
    assert not t.wants_read(0.5)
    assert t.next_at(0.5) == 1.0
    assert t.wants_read(1.0)
    t.due_stale = True  # a delayed job: read at once
    assert t.wants_read(1.01)
    assert not t.wants_read(2.0)
    assert t.wants_read(1.01 + IDLE_POLL_S)  # the safety read


def test_a_lost_read_is_read_again_and_losing_tracking_polls_again() -> None:
    t = IdleTimers(0.05, 1.0, 1.0)
    t.arm(True)
    assert t.wants_read(0.0)
    t.lost()
    assert t.wants_read(0.01)
    t.read("garbage", 0, 0.02)
    assert t.wants_read(0.03)
    t.arm(False)
    assert t.due(0.04) == ["promote_delayed", "reap_expired"]
    assert t.poll_gap(False) == 0.05
