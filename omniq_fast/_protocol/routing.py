"""Redis Cluster routing decisions, shared by the blocking and the asyncio cluster shells.

Pure: which reply is a redirection, what to do about a round of them, when to re-read the
slot map, whether a call whose effect is unknown may be sent again, and how long an
operation may still wait. The shells pass the time in (``now``, a monotonic clock reading)
and get delays back; they do the sockets, the sleeping and the topology reads.

The rules (the why is in :mod:`omniq_fast._cluster`'s docstring):

* ``MOVED``: the command did not run; note the owner it names and send it there. A second
  ``MOVED`` round in one operation means the nodes disagree: wait a little.
* ``ASK``: plain reads follow it (``ASKING`` + the command on the target); scripts wait
  until the migration ends and the source answers ``MOVED``.
* ``TRYAGAIN``, ``CLUSTERDOWN``, a refused connection, no known owner: nothing ran; wait.
* A connection lost after a script was sent: only :data:`RESEND_SAFE` scripts go again.
* All waiting stops after ``retry_s`` with :class:`ClusterUnavailable` (nothing ran).
"""

from __future__ import annotations

from typing import Callable, Generic, Iterable, Optional, Sequence, TypeVar

from ..errors import ClusterUnavailable, ReplyError

__all__ = [
    "RESEND_SAFE", "BACKOFF_FIRST_S", "BACKOFF_MAX_S", "MIN_REFRESH_S", "Patience",
    "Settlement", "redirect_of", "resend_safe", "first_redirect", "settle", "owner_address",
    "due_refresh", "parse_address", "SlotBook",
]

#: Scripts sent again after a connection broke with their effect unknown, because a second
#: run changes nothing more: ``heartbeat`` sets the same lock again (same ``now``) and
#: answers the same; ``child_ack`` records the child id before it counts, so a repeat
#: reports the same remainder; promote and reap move only what is still due (their count
#: then leaves out the first run's, which only the consumer's housekeeping reads). Not here:
#: enqueue (a second run queues the job twice), reserve (leases a second job), and the acks,
#: release, retry, remove, pause/resume and ``childs_init``, whose second run would be
#: refused or answer differently, hiding the first one's outcome from the caller. The
#: consumer re-sends its own acks and counts a refusal as ``ack_unknown``.
RESEND_SAFE = frozenset(
    {"heartbeat", "heartbeat_batch", "promote_delayed", "reap_expired", "child_ack"}
)

#: The first wait of an operation the cluster holds up; it doubles up to the cap.
BACKOFF_FIRST_S = 0.005
BACKOFF_MAX_S = 0.1
#: A slot map re-read less than this ago is fresh enough unless it is known to be stale.
MIN_REFRESH_S = 0.05

Redirect = tuple[str, str]  # (kind, "host:port" or "")


def redirect_of(reply: object) -> Optional[Redirect]:
    """``(kind, address)`` if ``reply`` is a cluster redirection, else None.

    ``kind`` is ``MOVED``, ``ASK``, ``TRYAGAIN`` or ``CLUSTERDOWN`` (address ``""`` for the
    last two). Each of them means the command did not run.
    """
    if not isinstance(reply, ReplyError):
        return None
    message = str(reply)
    kind, _, rest = message.partition(" ")
    if kind in ("MOVED", "ASK"):
        return kind, rest.rpartition(" ")[2]
    if kind in ("TRYAGAIN", "CLUSTERDOWN"):
        return kind, ""
    return None


def resend_safe(names: Iterable[str]) -> bool:
    """Whether scripts named ``names``, sent together, may all be sent again after their
    effect became unknown (a lost connection): true only if every one is resend-safe."""
    return all(name in RESEND_SAFE for name in names)


def first_redirect(replies: Sequence[object]) -> tuple[list[int], Optional[Redirect]]:
    """The indexes of the redirected replies of one round, and the redirection the round
    reacts to: the first that is not a ``MOVED`` (it means wait), else the first ``MOVED``."""
    left: list[int] = []
    seen: Optional[Redirect] = None
    for i, reply in enumerate(replies):
        redirect = redirect_of(reply)
        if redirect is not None:
            left.append(i)
            if seen is None or seen[0] == "MOVED":
                seen = redirect
    return left, seen


class Patience:
    """The retry budget of one operation: a deadline ``retry_s`` after ``now`` and the
    growing delay between tries. :meth:`wait` answers how long to sleep, or raises."""

    __slots__ = ("deadline", "delay", "what", "moved")

    def __init__(self, retry_s: float, what: str, now: float) -> None:
        self.deadline = now + retry_s
        self.delay = BACKOFF_FIRST_S
        self.what = what
        self.moved = 0  # rounds of this operation answered MOVED only

    def wait(self, why: str, now: float) -> float:
        """The seconds to sleep before the next try (``why`` it cannot go on now); raises
        :class:`ClusterUnavailable` once the deadline has passed (the operation did not run)."""
        if now >= self.deadline:
            raise ClusterUnavailable(f"{self.what} did not run: {why}")
        delay = min(self.delay, self.deadline - now)
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)
        return delay


class Settlement:
    """What to do about one round of redirections, in this order: record the slots as
    moved (``(slot, address)``), re-read the slot map at once if ``force_refresh``, then
    raise ``give_up`` if the operation's patience ran out (a ClusterUnavailable: it did not
    run), else sleep ``delay`` seconds (0: not at all) and try again."""

    __slots__ = ("moved", "force_refresh", "delay", "give_up")

    def __init__(
        self,
        moved: list[tuple[int, str]],
        force_refresh: bool,
        delay: float,
        give_up: Optional[ClusterUnavailable] = None,
    ) -> None:
        self.moved = moved
        self.force_refresh = force_refresh
        self.delay = delay
        self.give_up = give_up


def settle(
    redirects: Sequence[tuple[int, Redirect]], patience: Patience, now: float
) -> Settlement:
    """React to the redirections of one round, ``(slot, (kind, address))`` each: note the
    owner each ``MOVED`` names, and wait unless every one was simply moved. The first
    ``MOVED`` round needs no sleep; later ones mean the nodes do not agree yet (a failover
    being announced). ``ASK`` needs no new map, only time. When the operation's patience
    has run out the settlement's ``give_up`` is set (after the map work is done)."""
    moved: list[tuple[int, str]] = []
    kinds: set[str] = set()
    for slot, (kind, address) in redirects:
        if kind == "MOVED" and address:
            moved.append((slot, address))
        else:
            kinds.add(kind)
    if not kinds:
        patience.moved += 1
        if patience.moved == 1:
            return Settlement(moved, False, 0.0)
        why = "the nodes do not agree on who owns the slot yet"
    elif kinds == {"ASK"}:
        why = "the slot is migrating"
    else:
        why = f"cluster answered {', '.join(sorted(kinds))}"
    force = bool(kinds) and kinds != {"ASK"}
    try:
        return Settlement(moved, force, patience.wait(why, now))
    except ClusterUnavailable as exc:
        return Settlement(moved, force, 0.0, exc)


def owner_address(moved_to: Optional[str], mapped: Optional[str]) -> tuple[Optional[str], bool]:
    """Which node serves a slot: ``(address, forget_moved)``. ``moved_to`` is the address a
    ``MOVED`` reply named (or None), ``mapped`` the slot map's owner (or None).

    A ``MOVED`` reply names the new owner with authority (the node that gave the slot up);
    it is used until the slot map agrees (then it is forgotten), since a map refreshed from
    a node that has not heard of the move yet would send us back."""
    if moved_to is None:
        return mapped, False
    if mapped == moved_to:
        return mapped, True
    return moved_to, False


R = TypeVar("R")


class SlotBook(Generic[R]):
    """What a cluster shell remembers per slot: its route (made once, by ``make``; a route
    holds no node, so it never goes stale) and the owner a ``MOVED`` reply named, kept
    until the slot map agrees (:func:`owner_address`).

    Safe to share between threads without a lock: a route is published with
    ``dict.setdefault`` (two threads racing make two, and both get the one kept), and the
    ``MOVED`` entries are single dict operations."""

    __slots__ = ("_make", "_routes", "_moved")

    def __init__(self, make: Callable[[int], R]) -> None:
        self._make = make
        self._routes: dict[int, R] = {}
        self._moved: dict[int, str] = {}  # slot -> "host:port" a MOVED reply named

    def route(self, slot: int) -> R:
        """The route of ``slot``, made on first use."""
        route = self._routes.get(slot)
        if route is None:
            route = self._routes.setdefault(slot, self._make(slot))
        return route

    def moved(self, slot: int, address: str) -> None:
        """Note a ``MOVED slot address`` answer."""
        self._moved[slot] = address

    def owner(self, slot: int, mapped: Optional[str]) -> Optional[str]:
        """The address serving ``slot``, given the slot map's owner ``mapped`` (or None);
        a ``MOVED`` the map now agrees with is forgotten."""
        address, forget = owner_address(self._moved.get(slot), mapped)
        if forget:
            self._moved.pop(slot, None)
        return address


def due_refresh(force: bool, refreshed_at: float, now: float) -> bool:
    """Whether to re-read the slot map now: always when it is known to be stale
    (``force``), else only if nobody did in the last :data:`MIN_REFRESH_S`."""
    return force or now - refreshed_at >= MIN_REFRESH_S


def parse_address(address: str) -> Optional[tuple[str, int]]:
    """``(host, port)`` of a ``host:port`` a redirection named, or None if malformed."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)
