"""Result types returned by the client.

Field names and shapes match the official SDK's (``ReserveJob``, ``ReservePaused``,
``BatchResultItem``), so code that reads ``res.job_id`` or ``res.status`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple, Union

__all__ = [
    "ReservedJob",
    "ReserveJob",
    "Paused",
    "ReservePaused",
    "ReserveResult",
    "BatchResultItem",
    "AckFailResult",
]


@dataclass(frozen=True, slots=True)
class ReservedJob:
    """A job leased to the caller by ``reserve``.

    ``payload`` is the raw JSON text as stored; ``lease_token`` must accompany every
    heartbeat and ack of this lease. ``gid`` is ``""`` for ungrouped jobs.
    """

    status: Literal["JOB"]
    job_id: str
    payload: str
    lock_until_ms: int
    attempt: int
    max_attempts: int
    gid: str
    lease_token: str


@dataclass(frozen=True, slots=True)
class Paused:
    """``reserve`` found the queue paused: nothing was handed out."""

    status: Literal["PAUSED"] = "PAUSED"


#: Official SDK names, kept so imports written against it keep working.
ReserveJob = ReservedJob
ReservePaused = Paused

#: ``None`` when the queue is empty.
ReserveResult = Optional[Union[ReservedJob, Paused]]


@dataclass(frozen=True, slots=True)
class BatchResultItem:
    """One id's outcome in ``retry_failed_batch`` / ``remove_jobs_batch``.

    ``status`` is ``"OK"`` or ``"ERR"``; ``reason`` is the protocol reason code on errors.
    """

    job_id: str
    status: str
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status == "OK"


#: ``("RETRY", due_ms)`` or ``("FAILED", None)``.
AckFailResult = Tuple[Literal["RETRY", "FAILED"], Optional[int]]
