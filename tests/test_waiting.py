"""The dispatcher's wait (omniq_fast._waiting.Wakeup): a flag that one select waits for
together with the wake listener's connection."""

from __future__ import annotations

import socket
import threading
import time

from omniq_fast._waiting import LEND_MIN_S, Wakeup


class _Ear:
    """Stands for the wake listener: lends (or not) and records what it was asked."""

    def __init__(self, lends: bool) -> None:
        self.lends = lends
        self.asked: list[float] = []

    def listen(self, wakeup: socket.socket, timeout: float) -> bool:
        self.asked.append(timeout)
        return self.lends


def _timed(wakeup: Wakeup, timeout: float, ear: object = None) -> float:
    t0 = time.monotonic()
    wakeup.wait(timeout, ear)  # type: ignore[arg-type]
    return time.monotonic() - t0


def test_a_set_before_the_wait_returns_it_at_once() -> None:
    w = Wakeup()
    w.set()  # before the first wait made the socket pair: the flag alone tells
    assert w.is_set()
    assert _timed(w, 5.0) < 0.1
    w.close()


def test_a_set_from_another_thread_ends_the_wait() -> None:
    w = Wakeup()
    w.wait(0)
    threading.Timer(0.05, w.set).start()
    took = _timed(w, 5.0)
    assert 0.04 < took < 1.0, took
    w.close()


def test_clear_forgets_earlier_sets_and_the_wait_runs_its_time() -> None:
    w = Wakeup()
    w.wait(0)
    for _ in range(3):
        w.set()
    w.clear()
    assert not w.is_set()
    assert _timed(w, 0.05) >= 0.045
    w.close()
    w.set()  # closed: nobody waits, nothing breaks
    assert _timed(w, 5.0) < 0.1  # and a later wait opens a new pair


def test_long_waits_listen_through_the_ear_short_ones_do_not() -> None:
    w = Wakeup()
    lending = _Ear(lends=True)
    assert _timed(w, 1.0, lending) < 0.1  # the ear waited (here: not at all)
    assert lending.asked == [1.0]
    declining = _Ear(lends=False)
    assert _timed(w, 0.05, declining) >= 0.045  # declined: the plain wait
    short = _Ear(lends=True)
    assert _timed(w, LEND_MIN_S / 2, short) < 0.1
    assert short.asked == []
    w.close()
