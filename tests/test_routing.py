"""The Redis Cluster routing decisions (omniq_fast/_protocol/routing.py), without a server:
the time is passed in, so patience and back-off are checked exactly. Both cluster shells
act on these answers (tests/cluster runs them against real clusters)."""

from __future__ import annotations

import pytest

from omniq_fast import ClusterUnavailable
from omniq_fast._protocol import routing
from omniq_fast.errors import reply_error


def test_which_replies_are_redirections() -> None:
    assert routing.redirect_of(reply_error("MOVED 3999 127.0.0.1:7001")) == (
        "MOVED", "127.0.0.1:7001",
    )  # fmt: skip
    assert routing.redirect_of(reply_error("ASK 3999 ::1:7002")) == ("ASK", "::1:7002")
    assert routing.redirect_of(reply_error("TRYAGAIN Multiple keys")) == ("TRYAGAIN", "")
    assert routing.redirect_of(reply_error("CLUSTERDOWN The cluster is down")) == (
        "CLUSTERDOWN", "",
    )  # fmt: skip
    assert routing.redirect_of(reply_error("ERR MOVED is not a command")) is None
    assert routing.redirect_of(b"MOVED 1 a:1") is None  # a value, not an error reply
    assert routing.redirect_of(None) is None


def test_the_round_reacts_to_the_first_redirection_that_means_wait() -> None:
    moved = reply_error("MOVED 1 a:1")
    ask = reply_error("ASK 1 b:2")
    assert routing.first_redirect([1, moved, 2]) == ([1], ("MOVED", "a:1"))
    assert routing.first_redirect([moved, ask, moved]) == ([0, 1, 2], ("ASK", "b:2"))
    assert routing.first_redirect([1, 2]) == ([], None)


def test_only_harmless_scripts_are_sent_again() -> None:
    assert routing.resend_safe(["heartbeat", "heartbeat_batch"])
    assert routing.resend_safe(["promote_delayed", "reap_expired", "child_ack"])
    for name in ("enqueue", "enqueue_batch", "reserve", "ack_success", "ack_fail", "pause",
                 "resume", "childs_init", "retry_failed", "remove_job"):
        assert not routing.resend_safe([name]), name
        assert not routing.resend_safe(["heartbeat", name]), name


def test_patience_backs_off_then_gives_up_at_its_deadline() -> None:
    patience = routing.Patience(1.0, "publish", now=100.0)
    delays = [patience.wait("busy", 100.0) for _ in range(7)]
    assert delays == [0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1]  # capped at BACKOFF_MAX_S
    assert patience.wait("busy", 100.995) == pytest.approx(0.005)  # never past the deadline
    with pytest.raises(ClusterUnavailable, match="publish did not run: busy"):
        patience.wait("busy", 101.0)


def test_settle_moves_at_once_but_waits_for_everything_else() -> None:
    patience = routing.Patience(1.0, "x", now=0.0)
    first = routing.settle([(7, ("MOVED", "a:1"))], patience, 0.0)
    assert (first.moved, first.force_refresh, first.delay) == ([(7, "a:1")], False, 0.0)
    again = routing.settle([(7, ("MOVED", "b:2"))], patience, 0.0)  # nodes disagree: wait
    assert again.moved == [(7, "b:2")] and again.delay > 0 and not again.force_refresh
    ask = routing.settle([(7, ("ASK", "b:2"))], routing.Patience(1.0, "x", 0.0), 0.0)
    assert ask.moved == [] and not ask.force_refresh and ask.delay > 0  # only time
    down = routing.settle(
        [(7, ("CLUSTERDOWN", "")), (8, ("MOVED", "c:3"))], routing.Patience(1.0, "x", 0.0), 0.0
    )
    assert down.moved == [(8, "c:3")] and down.force_refresh and down.delay > 0
    late = routing.settle([(7, ("TRYAGAIN", ""))], routing.Patience(1.0, "x", 0.0), 1.0)
    # Out of patience: the map is still re-read, then the operation gives up (not run).
    assert late.force_refresh and isinstance(late.give_up, ClusterUnavailable)
    assert "TRYAGAIN" in str(late.give_up)


def test_a_moved_reply_outranks_a_stale_map_until_the_map_agrees() -> None:
    assert routing.owner_address(None, "a:1") == ("a:1", False)
    assert routing.owner_address("b:2", "a:1") == ("b:2", False)
    assert routing.owner_address("b:2", None) == ("b:2", False)
    assert routing.owner_address("b:2", "b:2") == ("b:2", True)  # forget the MOVED now
    assert routing.owner_address(None, None) == (None, False)


def test_the_slot_book_makes_each_route_once_and_keeps_a_moved_owner_until_the_map_agrees() -> None:
    made: list[int] = []

    def make(slot: int) -> tuple[str, int]:
        made.append(slot)
        return ("route", slot)

    book = routing.SlotBook(make)
    first = book.route(7)
    assert first == ("route", 7) and book.route(7) is first and book.route(9) == ("route", 9)
    assert made == [7, 9]  # the cache is what both cluster shells share
    assert book.owner(7, "a:1") == "a:1"
    book.moved(7, "b:2")
    assert book.owner(7, "a:1") == "b:2"  # the stale map is outranked...
    assert book.owner(7, None) == "b:2"
    assert book.owner(9, "a:1") == "a:1"  # ...for that slot only
    assert book.owner(7, "b:2") == "b:2"  # the map agrees: the MOVED is forgotten,
    assert book.owner(7, "c:3") == "c:3"  # so a later map change is followed


def test_refresh_is_rate_limited_unless_forced() -> None:
    assert not routing.due_refresh(False, 10.0, 10.0 + routing.MIN_REFRESH_S / 2)
    assert routing.due_refresh(False, 10.0, 10.0 + routing.MIN_REFRESH_S)
    assert routing.due_refresh(True, 10.0, 10.0)


def test_addresses() -> None:
    assert routing.parse_address("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert routing.parse_address("::1:7000") == ("::1", 7000)
    assert routing.parse_address("host") is None
    assert routing.parse_address(":7000") is None
    assert routing.parse_address("h:port") is None
