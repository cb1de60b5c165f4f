"""What the consumer's pure core asks its shell to do: the effects of a decision.

:class:`~omniq_fast._protocol.dispatch.Dispatcher` never beats a lease, releases a job,
logs or calls an observer itself; it appends these to a list that the shell (a thread of
:class:`~omniq_fast.Consumer`, a task of :class:`~omniq_fast.AsyncConsumer`) applies in
order, its own way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .._context import JobCtx

__all__ = [
    "Effect", "StartBeats", "StopBeats", "HoldBeats", "ResumeBeats", "Release", "Report",
    "Line", "Log", "Failing", "Recovered",
]  # fmt: skip


@dataclass(frozen=True)
class StartBeats:
    """Beat these new leases every ``interval`` seconds."""

    ctxs: list[JobCtx]
    interval: float


@dataclass(frozen=True)
class StopBeats:
    """Stop beating these leases for good (acked, released, lost)."""

    job_ids: list[str]


@dataclass(frozen=True)
class HoldBeats:
    """Their acks go out now: stop beating these leases until answered. A beat in flight
    must finish first, so that no beat follows the ack."""

    job_ids: list[str]


@dataclass(frozen=True)
class ResumeBeats:
    """Their acks did not run (or may not have): beat these held leases again."""

    job_ids: list[str]


@dataclass(frozen=True)
class Release:
    """Give these prefetched, never started jobs back (``release_many``), in order.

    ``isolating``: they were reserved together with a job that ran before, which is to
    run alone; otherwise the consumer is stopping, and each is reported ``released``."""

    ctxs: list[JobCtx]
    isolating: Optional[JobCtx] = None


@dataclass(frozen=True)
class Report:
    """Tell the observer: ``kind`` ``"handled"`` (``arg``: the handler's seconds),
    ``"finished"`` (``arg``: the outcome), ``"fail"`` (``arg``: ack_fail's status) or
    ``"unknown"`` (``arg``: the ack whose re-send was refused)."""

    ctx: JobCtx
    kind: str
    arg: Any


@dataclass(frozen=True)
class Line:
    """A verbose line (the shell adds the queue, and the job's id and attempt)."""

    text: str
    ctx: Optional[JobCtx] = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Log:
    """A line for the ``omniq_fast.consumer`` logger: ``level``, ``msg % args``."""

    level: int
    msg: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Failing:
    """A round trip failed with ``cause``: the outage is logged once, not per try."""

    cause: BaseException


@dataclass(frozen=True)
class Recovered:
    """A round trip went through: an outage, if one was logged, is over."""


Effect = Union[
    StartBeats, StopBeats, HoldBeats, ResumeBeats, Release, Report, Line, Log, Failing, Recovered
]
