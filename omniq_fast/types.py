"""Result types returned by the client.

Field names and shapes match the official SDK's (``ReserveJob``, ``ReservePaused``,
``BatchResultItem``), so code that reads ``res.job_id`` or ``res.status`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Tuple, Union

__all__ = [
    "ReservedJob",
    "MalformedJob",
    "ReserveJob",
    "Paused",
    "ReservePaused",
    "ReserveResult",
    "BatchResultItem",
    "AckFailResult",
    "Job",
    "JobResult",
]


# Not frozen: a frozen dataclass's __init__ costs 3x more (object.__setattr__ per field),
# and a consumer builds one of these per job. Treat them as read-only all the same.
@dataclass(slots=True)
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


@dataclass(slots=True)
class MalformedJob(ReservedJob):
    """A job ``reserve_many`` leased whose reply this client cannot read: a field of its
    hash edited by hand or written by a buggy producer (a number that is not an integer,
    or one too large for the scripts' arithmetic; text that is not UTF-8; no payload, as
    when the hash was deleted).

    ``problem`` names the job hash fields at fault. Fields that could not be read hold
    stand-ins (0, or the text with its bad bytes escaped); the lease is real. The consumer
    runs no handler for it and acks it failed with ``"MalformedJob: <problem>"``, so it is
    retried (in case it was fixed meanwhile) or ends in ``failed``, never stranded.
    """

    problem: str = ""


@dataclass(frozen=True, slots=True)
class Paused:
    """``reserve`` found the queue paused: nothing was handed out."""

    status: Literal["PAUSED"] = "PAUSED"


#: Official SDK names, kept so imports written against it keep working.
ReserveJob = ReservedJob
"""The official SDK's name for :class:`ReservedJob`."""
ReservePaused = Paused
"""The official SDK's name for :class:`Paused`."""

#: ``None`` when the queue is empty.
ReserveResult = Optional[Union[ReservedJob, Paused]]
"""What ``reserve`` returns: a :class:`ReservedJob`, :class:`Paused`, or ``None`` when the
queue is empty."""


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
"""What ``ack_fail`` returns: ``("RETRY", due_ms)`` or ``("FAILED", None)``."""


@dataclass(frozen=True, slots=True)
class Job:
    """One job for ``publish_many`` with options of its own.

    Options left as ``None`` take the value given to ``publish_many`` (whose defaults are
    ``publish``'s). They are checked when the batch is encoded, before it is sent.
    """

    payload: Any
    job_id: Optional[str] = None
    max_attempts: Optional[int] = None
    timeout_ms: Optional[int] = None
    backoff_ms: Optional[int] = None
    due_ms: Optional[int] = None
    gid: Optional[str] = None
    group_limit: Optional[int] = None


@dataclass(slots=True)  # not frozen, for the same reason as ReservedJob
class JobResult:
    """One job's outcome in ``ack_success_many`` / ``ack_fail_many`` / ``heartbeat_many``.

    ``status`` is ``"OK"`` (acked; for heartbeats ``ms`` is the new ``lock_until_ms``),
    ``"RETRY"`` (``ms`` is the due time), ``"FAILED"``, or ``"ERR"`` with the protocol
    ``reason`` (``TOKEN_MISMATCH``, ``NOT_ACTIVE``...).
    """

    job_id: str
    status: Literal["OK", "RETRY", "FAILED", "ERR"]
    ms: Optional[int] = None
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status != "ERR"
