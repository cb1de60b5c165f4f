"""The monitor's models: what each read-only queue view returns.

Names and fields are the official SDK's ``omniq.monitor_models`` (so results compare field
by field); :class:`QueueActivity` and :class:`CounterStatus` are omniq-fast's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Lane", "QueueStats", "GroupReady", "GroupStatus", "JobInfo", "LaneJob", "QueueOverview",
    "GroupsPage", "QueueActivity", "CounterStatus",
]

Lane = Literal["wait", "active", "delayed", "failed", "completed"]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The ``{Q}:stats`` counters of one queue, plus whether it is paused."""

    queue: str
    paused: bool
    waiting: int
    group_waiting: int
    waiting_total: int
    active: int
    delayed: int
    failed: int
    completed_kept: int
    groups_ready: int
    last_activity_ms: int
    last_enqueue_ms: int
    last_reserve_ms: int
    last_finish_ms: int


@dataclass(frozen=True, slots=True)
class GroupReady:
    """A group in ``{Q}:groups:ready`` and the time (ms) it became ready."""

    gid: str
    score_ms: int


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A group's concurrency state: jobs in flight, its limit, queued jobs, readiness."""

    gid: str
    inflight: int
    limit: int
    ready: bool
    waiting_count: int


@dataclass(frozen=True, slots=True)
class JobInfo:
    """Every field of one job hash (PROTOCOL.md §3); times are ms, 0 when unset."""

    job_id: str
    state: str
    gid: str
    attempt: int
    max_attempts: int
    timeout_ms: int
    backoff_ms: int
    lease_token: str
    lock_until_ms: int
    due_ms: int
    payload: str
    last_error: str
    last_error_ms: int
    created_ms: int
    updated_ms: int
    queued_ms: int
    first_started_ms: int
    last_started_ms: int
    completed_ms: int
    failed_ms: int


@dataclass(frozen=True, slots=True)
class LaneJob:
    """A job as listed in a lane page: ``idx_score_ms`` is when it entered the lane."""

    lane: Lane
    job_id: str
    idx_score_ms: int
    state: str
    gid: str
    attempt: int
    max_attempts: int
    due_ms: int
    lock_until_ms: int
    queued_ms: int
    first_started_ms: int
    last_started_ms: int
    completed_ms: int
    failed_ms: int
    updated_ms: int
    last_error: str


@dataclass(frozen=True, slots=True)
class QueueOverview:
    """A queue's stats with the first samples of its ready groups and of four lanes."""

    stats: QueueStats
    ready_groups: list[GroupReady]
    active: list[LaneJob]
    delayed: list[LaneJob]
    failed: list[LaneJob]
    completed: list[LaneJob]


@dataclass(frozen=True, slots=True)
class GroupsPage:
    """One page of a queue's groups; ``cursor`` resumes the listing, ``""`` once done."""

    groups: list[GroupStatus]
    cursor: str


@dataclass(frozen=True, slots=True)
class QueueActivity:
    """What a dashboard samples of a queue: its stats, ``lease_seq`` (the lease counter:
    how many reservations were ever made), the oldest waiting job's entry time (0 if none),
    and how many jobs entered the completed and failed lanes after the given marks, with the
    newest entry time of each lane (the mark to pass next time)."""

    stats: QueueStats
    lease_seq: int
    oldest_wait_ms: int
    completed_since: int
    completed_newest_ms: int
    failed_since: int
    failed_newest_ms: int


@dataclass(frozen=True, slots=True)
class CounterStatus:
    """A completion counter ``{cc:K}``: whether it exists, children still expected, and
    how many distinct children acked so far."""

    key: str
    exists: bool
    remaining: int
    done: int

