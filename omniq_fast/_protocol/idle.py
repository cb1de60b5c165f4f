"""The idle consumer's decisions: which keys to be told about, when to poll, promote, reap.

An idle consumer must notice a job that became reservable, whoever made it so (any SDK's
producer, a promote or reap by another consumer, a resume, a retry from a dashboard), and
must promote delayed jobs when they fall due and reap leases soon after they expire, at a
cost to the server of a few commands a second.

With key tracking (``CLIENT TRACKING ON REDIRECT <own id> BCAST PREFIX ...``, Redis 6+ and
Valkey) the server tells the listener's connection of every write to the tracked keys,
writes made inside scripts included, so:

* a write to ``{Q}:wait``, ``{Q}:groups:ready`` or ``{Q}:paused`` wakes the consumer for
  a reserve (every way a job becomes reservable writes one of them: enqueue, promote,
  reap, retry, an ack that frees a group slot, a resume deleting the pause flag);
* a write to ``{Q}:delayed`` or ``{Q}:active`` moves the consumer's timers: it reads the
  earliest due time and the earliest lease deadline (the ``next_due`` script) and promotes
  or reaps exactly then, instead of every second;
* the reserve poll stays, every :data:`IDLE_POLL_S`, as a safety net.

Without tracking (an old server, a refused ``CLIENT`` command, the listener between two
connections) everything is as before: a reserve every ``poll_interval_s``, promote and reap
every ``promote_interval_s`` / ``reap_interval_s``.

Pure: times are arguments (``now`` monotonic seconds, ``now_ms`` the scripts' wall clock).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence

from ..keys import queue_base

__all__ = [
    "IDLE_POLL_S", "TRACKED_SUFFIXES", "tracked_prefixes", "tracking_command", "Change",
    "change_of", "IdleTimers",
]  # fmt: skip

#: The safety-net reserve (and timer re-read) of a tracked idle consumer. A job can only be
#: found this late if an invalidation was lost, which the server does not do on a live
#: connection; the listener pings its connection to find a dead one sooner.
IDLE_POLL_S = 5.0

#: Keys under ``{Q}`` whose writes the listener is told of. The first three make a job
#: reservable; the last two move the promote and reap times. None is a prefix of another
#: (the server refuses overlapping prefixes), and no other key of the queue starts with one.
TRACKED_SUFFIXES = (":wait", ":groups:ready", ":paused", ":delayed", ":active")
_WAKE = frozenset((b":wait", b":groups:ready", b":paused"))


def tracked_prefixes(queue: str) -> list[str]:
    """The key prefixes to track for ``queue`` (all in its hash slot)."""
    base = queue_base(queue)
    return [base + suffix for suffix in TRACKED_SUFFIXES]


def tracking_command(client_id: int, queue: str) -> tuple[str, ...]:
    """``CLIENT TRACKING ON REDIRECT <id> BCAST PREFIX ...``: the connection ``client_id``
    (itself, subscribed to ``__redis__:invalidate``) hears of every write to the tracked
    keys, whoever made it."""
    args = ["CLIENT", "TRACKING", "ON", "REDIRECT", str(client_id), "BCAST"]
    for prefix in tracked_prefixes(queue):
        args += ["PREFIX", prefix]
    return tuple(args)


class Change(NamedTuple):
    """What an invalidation message means for the consumer."""

    reservable: bool  # a job may have become reservable: reserve now
    due: bool  # the delayed set changed: re-read the earliest due time
    leases: bool  # the active set changed: re-read the earliest lease deadline


_EVERYTHING = Change(True, True, True)


def change_of(queue: str, keys: Optional[Sequence[Any]]) -> Change:
    """The meaning of an invalidation of ``keys`` (None: the server flushed everything)."""
    if keys is None:
        return _EVERYTHING
    base = queue_base(queue).encode()
    reservable = due = leases = False
    for key in keys:
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes) or not key.startswith(base):
            return _EVERYTHING  # not ours or unreadable: assume the worst, it is cheap
        rest = key[len(base) :]
        if rest in _WAKE:
            reservable = True
        elif rest == b":delayed":
            due = True
        elif rest == b":active":
            leases = True
        else:
            return _EVERYTHING
    return Change(reservable, due, leases)


def _score_ms(value: Any) -> Optional[int]:
    """A zset score read from the ``next_due`` reply ("" when the set is empty)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) or not value:
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    return int(math.ceil(score)) if math.isfinite(score) else None


class IdleTimers:
    """When a consumer next promotes, reaps, re-reads the server's next due times and
    polls, tracked or not.

    ``tracking`` and the ``*_stale`` flags are set by the shell when its listener arms or
    loses tracking and when invalidations arrive (plain attribute writes: the decisions
    read them at the next turn)."""

    def __init__(
        self, poll_interval_s: float, promote_interval_s: float, reap_interval_s: float
    ) -> None:
        self.poll_interval_s = poll_interval_s
        self.promote_interval_s = promote_interval_s
        self.reap_interval_s = reap_interval_s
        self.tracking = False
        self.due_stale = True  # the delayed set changed since the last next_due read
        self.leases_stale = True  # the active set changed since the last next_due read
        self._next_promote = self._next_reap = 0.0  # untracked: fixed intervals
        self._promote_at: Optional[float] = None  # tracked: when the earliest job is due
        self._reap_at: Optional[float] = None  # tracked: when the earliest lease expires
        self._read_at = -math.inf  # when next_due was last sent

    def arm(self, tracking: bool) -> None:
        """The listener armed tracking (True) or lost it (False). Either way what the
        server holds is re-read: writes made while nobody was told are not missed."""
        self.tracking = tracking
        self.due_stale = self.leases_stale = True
        if not tracking:
            self._next_promote = self._next_reap = 0.0  # promote and reap at once

    def poll_gap(self, paused: bool) -> float:
        """How long after a reserve found nothing (or the queue paused) the next one goes
        out unless a wake-up comes first."""
        if self.tracking:
            return IDLE_POLL_S
        return max(0.25, 10 * self.poll_interval_s) if paused else self.poll_interval_s

    def due(self, now: float, holding: bool = False) -> list[str]:
        """The timer scripts to run now, in order (and when they are next due).

        ``holding``: the consumer holds leases (jobs running, in hand or acks unsent). Then
        it also reaps every ``reap_interval_s`` as without tracking: a lease of its own that
        ran out (a handler past its timeout) is taken before its late ack goes, whatever the
        server's next due time said when it was last read. Idle, it costs nothing."""
        kinds: list[str] = []
        if not self.tracking:
            if now >= self._next_promote:
                kinds.append("promote_delayed")
                self._next_promote = now + self.promote_interval_s
            if now >= self._next_reap:
                kinds.append("reap_expired")
                self._next_reap = now + self.reap_interval_s
            return kinds
        if self._promote_at is not None and now >= self._promote_at:
            kinds.append("promote_delayed")
            self._promote_at, self.due_stale = None, True  # a batch may leave more due
        if (self._reap_at is not None and now >= self._reap_at) or (
            holding and now >= self._next_reap
        ):
            kinds.append("reap_expired")
            self._reap_at, self.leases_stale = None, True
            self._next_reap = now + self.reap_interval_s
        return kinds

    def leased(self, expires_in_s: float, now: float) -> None:
        """This consumer took a lease that ends in ``expires_in_s``: reap by then at the
        latest, as the fixed timers would (the last ``next_due`` reply may predate the
        reserve, and the active set's changes are re-read only every ``reap_interval_s``).
        A lease held past its end is the reaper's to take, the consumer's own included."""
        if not self.tracking:
            return
        at = now + max(0.0, expires_in_s)
        if self._reap_at is None or at < self._reap_at:
            self._reap_at = at

    def wants_read(self, now: float) -> bool:
        """Whether to read the next due times in this round trip (then sent): at once when
        the delayed set changed (a job due in a few ms must be promoted on time); when the
        active set changed, at most every ``reap_interval_s`` (it changes with every
        reserve, heartbeat and ack of every consumer of the queue, and a lease reaped up to
        that late is what polling did); and every :data:`IDLE_POLL_S` regardless."""
        if not self.tracking:
            return False
        since = now - self._read_at
        if not (
            self.due_stale
            or (self.leases_stale and since >= self.reap_interval_s)
            or since >= IDLE_POLL_S
        ):
            return False
        self.due_stale = self.leases_stale = False
        self._read_at = now
        return True

    def read(self, reply: Any, sent_ms: int, now: float) -> None:
        """The ``next_due`` reply of a read sent at wall time ``sent_ms``."""
        if not isinstance(reply, list) or len(reply) != 2:
            self.lost()
            return
        due_ms, expiry_ms = _score_ms(reply[0]), _score_ms(reply[1])
        self._promote_at = None if due_ms is None else now + max(0, due_ms - sent_ms) / 1000
        self._reap_at = None if expiry_ms is None else now + max(0, expiry_ms - sent_ms) / 1000

    def lost(self) -> None:
        """A read's reply did not come (or did not read): read again at the next turn."""
        self.due_stale = self.leases_stale = True
        self._read_at = -math.inf

    def next_at(self, now: float) -> float:
        """The monotonic time at which a timer next needs a turn (``inf``: none)."""
        if not self.tracking:
            return min(self._next_promote, self._next_reap)
        times = [self._read_at + IDLE_POLL_S]
        if self.leases_stale:
            times.append(self._read_at + self.reap_interval_s)
        if self.due_stale:
            times.append(now)
        if self._promote_at is not None:
            times.append(self._promote_at)
        if self._reap_at is not None:
            times.append(self._reap_at)
        return max(now, min(times))  # overdue (or never read): now
