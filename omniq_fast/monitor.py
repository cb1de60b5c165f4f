"""Read-only monitoring of OmniQ queues: counters, ready groups and pages of jobs.

:class:`QueueMonitor` returns what the official SDK's ``omniq.monitor.QueueMonitor``
returns for the same Redis data (same models, fields and edge cases), but batches its reads:
a page of jobs takes two round trips instead of two per job, an overview two in all.

Behaviours kept from the official monitor (found by experiment, PROTOCOL.md §2-4):

* Queue names are validated before any read (``ValueError``); lane names are not.
* Integers are read as ``int(float(text))``; missing or unparsable reads as 0.
* A read that fails (a key of the wrong type, bytes that are not UTF-8) gives the default
  for that read instead of an error: a monitor shows what it can.
* Job pages read the ``idx:<lane>`` zsets (order of entry into the lane), not the lanes,
  and drop ids whose job hash is gone rather than refill the page.
* ``offset`` is floored at 0; ``limit`` is clamped to 1..25 for job pages and overview
  samples, 1..500 for ready groups.

One difference: pages read only the fields they show, so a job whose payload is not UTF-8
is listed here and left out there (no client can write such a payload).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Optional, Protocol, Union

import redis
from redis.client import NEVER_DECODE
from redis.cluster import RedisCluster

from .errors import InvalidQueueName
from .keys import LANES, counter_anchor, queue_base, validate_queue_name

__all__ = [
    "Lane", "QueueStats", "GroupReady", "GroupStatus", "JobInfo", "LaneJob", "QueueOverview",
    "GroupsPage", "QueueActivity", "CounterStatus", "QueueMonitor",
]

Lane = Literal["wait", "active", "delayed", "failed", "completed"]

_PAGE_MAX = 25
_GROUPS_MAX = 500
#: Largest page of :meth:`QueueMonitor.groups_page` and :meth:`QueueMonitor.group_wait_page`.
_GROUP_PAGE_MAX = 200
#: SCAN calls one groups page may make: bounds a page's cost on a huge keyspace (the page
#: then comes back short, with a cursor to go on from).
_GROUP_SCAN_CALLS = 64
_GROUP_SCAN_COUNT_MAX = 2000
#: The keys a group may have (PROTOCOL.md §2), in the order that picks the one key a
#: group is listed under (see :meth:`QueueMonitor.groups_page`).
_GROUP_KEY_SUFFIXES = (":wait", ":inflight", ":limit")
_STATS_SUFFIX = ":stats"
#: Lanes an overview samples, in the order of :class:`QueueOverview`'s fields.
_SAMPLED_LANES = ("active", "delayed", "failed", "completed")


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


_STATS_INT_FIELDS = tuple(QueueStats.__dataclass_fields__)[2:]  # all but queue, paused
#: Job-hash fields a lane page shows, in :class:`LaneJob` order (HMGET asks for just these,
#: so a page never transfers payloads).
_LANE_JOB_FIELDS = tuple(LaneJob.__dataclass_fields__)[3:]
_TEXT_FIELDS = frozenset(("state", "gid", "lease_token", "payload", "last_error"))


class _HasRedis(Protocol):
    @property
    def redis(self) -> redis.Redis: ...


def _read(target: Any, *args: Any, **options: Any) -> Any:
    """Send (or queue, on a pipeline) a read whose reply comes back undecoded.

    Results then do not depend on the connection's ``decode_responses``, and bytes that
    are not UTF-8 reach :func:`_text`, which can fail one read, instead of raising inside
    redis-py, which would fail the whole pipeline.
    """
    return target.execute_command(*args, **options, **{NEVER_DECODE: []})


def _zrange(target: Any, key: str, start: int, stop: int, reverse: bool = False) -> Any:
    command = "ZREVRANGE" if reverse else "ZRANGE"
    return _read(target, command, key, start, stop, "WITHSCORES", withscores=True,
                 score_cast_func=float)


def _text(value: Any) -> Any:
    # Strict UTF-8: the official client decodes every reply, so data that does not decode
    # makes its whole read fail (and fall back to the default) there too.
    return value.decode() if isinstance(value, bytes) else value


def _int(value: Any) -> int:
    """Lenient integer, as the official SDK reads every counter, time and score."""
    if value is None:
        return 0
    try:
        return int(float(_text(value)))
    except (ValueError, OverflowError, TypeError):  # UnicodeDecodeError is a ValueError
        return 0


def _ok(reply: Any) -> Any:
    """A pipeline reply, or ``None`` when that command failed (wrong key type...)."""
    return None if isinstance(reply, Exception) else reply


def _hash(reply: Any) -> Optional[dict[str, str]]:
    """An HGETALL reply as str→str, or ``None`` if it failed or does not decode."""
    reply = _ok(reply)
    if reply is None:
        return None
    try:
        return {_text(k): _text(v) for k, v in reply.items()}
    except UnicodeDecodeError:
        return None


def _entries(reply: Any) -> list[tuple[str, int]]:
    """A ZRANGE WITHSCORES reply as (member, score) pairs; empty if any is unreadable."""
    reply = _ok(reply)
    if reply is None:
        return []
    try:
        return [(_text(member), _int(score)) for member, score in reply]
    except UnicodeDecodeError:
        return []


def _window(offset: Any, limit: Any, cap: int) -> tuple[int, int]:
    """Inclusive ZRANGE bounds: offset floored at 0, limit clamped to 1..cap."""
    start = max(0, int(offset))
    return start, start + max(1, min(int(limit), cap)) - 1


def _queue_of_stats_key(key: Any) -> Optional[str]:
    """The queue a ``{Q}:stats`` key belongs to, or ``None`` if it names no valid queue.

    As in the official scan, surrounding whitespace goes before the braces, and a
    brace-less ``Q:stats`` counts as queue ``Q`` too.
    """
    try:
        name = _text(key)[: -len(_STATS_SUFFIX)].strip()
    except UnicodeDecodeError:  # the official scan crashes here; such a key names no queue
        return None
    if len(name) >= 2 and name[0] == "{" and name[-1] == "}":
        name = name[1:-1]
    try:
        return validate_queue_name(name)
    except InvalidQueueName:
        return None


def _queue_stats(queue: str, stats_reply: Any, paused_reply: Any) -> QueueStats:
    fields = _hash(stats_reply) or {}
    counts = {name: _int(fields.get(name)) for name in _STATS_INT_FIELDS}
    # The official monitor shows the sum of the parts when the total is not positive but
    # a part is; kept so both show the same numbers.
    if counts["waiting_total"] <= 0 and (counts["waiting"] > 0 or counts["group_waiting"] > 0):
        counts["waiting_total"] = counts["waiting"] + counts["group_waiting"]
    return QueueStats(queue=queue, paused=bool(_int(_ok(paused_reply))), **counts)


def _ready_groups(reply: Any) -> list[GroupReady]:
    return [GroupReady(gid=gid, score_ms=score) for gid, score in _entries(reply)]


def _queue_lane_job_reads(pipe: Any, base: str, job_id: str) -> None:
    # EXISTS tells a missing hash from one lacking every listed field, which the official
    # monitor still lists (with defaults).
    key = f"{base}:job:{job_id}"
    _read(pipe, "EXISTS", key)
    _read(pipe, "HMGET", key, *_LANE_JOB_FIELDS)


def _lane_job(lane: Any, job_id: str, score: int, exists: Any, values: Any) -> Optional[LaneJob]:
    """A :class:`LaneJob` from pipelined EXISTS + HMGET, or ``None`` if the hash is gone."""
    values = _ok(values)
    if not _ok(exists) or values is None:
        return None
    try:
        texts = [_text(v) for v in values]
    except UnicodeDecodeError:
        return None
    fields: dict[str, Any] = {
        name: (value or "") if name in _TEXT_FIELDS else _int(value)
        for name, value in zip(_LANE_JOB_FIELDS, texts)
    }
    return LaneJob(lane=lane, job_id=job_id, idx_score_ms=score, **fields)


def _job_info(job_id: str, reply: Any) -> Optional[JobInfo]:
    fields = _hash(reply)
    if not fields:  # HGETALL of a missing key is empty
        return None
    values: dict[str, Any] = {
        name: fields.get(name, "") if name in _TEXT_FIELDS else _int(fields.get(name))
        for name in JobInfo.__dataclass_fields__
        if name != "job_id"
    }
    return JobInfo(job_id=job_id, **values)


def _group_keys(prefix: str, keys: list[Any]) -> list[tuple[str, int]]:
    """The ``(gid, rank)`` each group key of ``keys`` names, rank being its suffix's place
    in :data:`_GROUP_KEY_SUFFIXES`; keys that are no group's (or not UTF-8) are skipped."""
    found: list[tuple[str, int]] = []
    for key in keys:
        try:
            rest = _text(key)[len(prefix):]
        except UnicodeDecodeError:
            continue
        for rank, suffix in enumerate(_GROUP_KEY_SUFFIXES):
            if rest.endswith(suffix) and len(rest) > len(suffix):
                found.append((rest[: -len(suffix)], rank))
                break
    return found


class QueueMonitor:
    """Read-only views of queues for dashboards and operators.

    ``source`` is a ``redis.Redis`` or ``RedisCluster``, or anything exposing one as
    ``.redis`` (an omniq-fast client); its ``decode_responses`` setting does not matter.
    Nothing here writes. On a cluster, reads of a queue go to its master (pipelines are
    split by node) and :meth:`scan_queues` scans every master.
    """

    __slots__ = ("_redis",)

    def __init__(self, source: Union[redis.Redis, RedisCluster, _HasRedis]) -> None:
        self._redis: Any = (
            source if isinstance(source, (redis.Redis, RedisCluster)) else source.redis
        )

    def _scan_targets(self) -> list[Any]:
        """The servers holding keys: the one server, or every master of a cluster."""
        if isinstance(self._redis, RedisCluster):
            primaries = self._redis.get_primaries()  # type: ignore[no-untyped-call]
            return [self._redis.get_redis_connection(n) for n in primaries]
        return [self._redis]

    def _pipeline(self) -> Any:
        # No MULTI/EXEC: independent reads gain nothing from it but two more commands
        # and a server blocked for the whole batch.
        return self._redis.pipeline(transaction=False)

    def scan_queues(self) -> list[str]:
        """Names of the queues that have a stats hash, sorted, each once."""
        names: set[str] = set()
        for server in self._scan_targets():
            cursor = 0
            while True:
                cursor, keys = _read(server, "SCAN", cursor, "MATCH", "*" + _STATS_SUFFIX,
                                     "COUNT", 1000, "TYPE", "hash")
                for key in keys:
                    name = _queue_of_stats_key(key)
                    if name is not None:
                        names.add(name)
                if not int(cursor):
                    break
        return sorted(names)

    def stats(self, queue: str) -> QueueStats:
        """The counters of ``queue``; all zero when it has no stats hash."""
        return self.stats_many([queue])[0]

    def stats_many(self, queues: Optional[Iterable[str]] = None) -> list[QueueStats]:
        """Stats of ``queues`` in the order given (duplicates kept), or of every queue
        :meth:`scan_queues` finds when ``queues`` is ``None``."""
        names = self.scan_queues() if queues is None else list(queues)
        bases = [queue_base(name) for name in names]
        pipe = self._pipeline()
        for base in bases:
            _read(pipe, "HGETALL", base + ":stats")
            _read(pipe, "EXISTS", base + ":paused")
        replies = pipe.execute(raise_on_error=False)
        return [_queue_stats(q, replies[2 * i], replies[2 * i + 1]) for i, q in enumerate(names)]

    def oldest_waiting_ms(self, queues: Iterable[str]) -> list[Optional[int]]:
        """For each queue (in order), when its oldest waiting job entered the wait lane
        (ms, from ``idx:wait``; grouped jobs included), or ``None`` when none waits.

        Not in the official monitor: an operator's "how far behind is this queue"."""
        names = list(queues)
        bases = [queue_base(name) for name in names]
        pipe = self._pipeline()
        for base in bases:
            _zrange(pipe, base + ":idx:wait", 0, 0)
        replies = pipe.execute(raise_on_error=False)
        oldest: list[Optional[int]] = []
        for reply in replies:
            entries = _entries(reply)
            oldest.append(entries[0][1] if entries else None)
        return oldest

    def scan_groups(self, queue: str) -> list[str]:
        """Every group id of ``queue`` that has a key (a waiting list, an in-flight count
        or a limit), sorted; a SCAN of the queue's node. Not in the official monitor,
        which only lists ready groups."""
        base = queue_base(queue)
        prefix = base + ":g:"
        server = self._server_of(base)
        # Queue names have no glob characters, and braces are not glob syntax.
        gids: set[str] = set()
        cursor = 0
        while True:
            cursor, keys = _read(server, "SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000)
            gids.update(gid for gid, _ in _group_keys(prefix, keys))
            if not int(cursor):
                break
        return sorted(gids)

    def oldest_waiting_age_ms(self, queue: str, now_ms: Optional[int] = None) -> int:
        """How long the longest-waiting job of ``queue`` (grouped or not) has been ready:
        ``now_ms`` (default: this clock) minus the time it entered the wait lane
        (published, or promoted when due); 0 when nothing waits."""
        return self.oldest_waiting_ages_ms([queue], now_ms)[0]

    def oldest_waiting_ages_ms(
        self, queues: Iterable[str], now_ms: Optional[int] = None
    ) -> list[int]:
        """:meth:`oldest_waiting_age_ms` of each of ``queues``, in one round trip."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return [0 if at is None else max(0, now - at) for at in self.oldest_waiting_ms(queues)]

    def grouped_active_many(self, queues: Iterable[str]) -> list[int]:
        """How many leased jobs of each of ``queues`` belong to a group, in two round
        trips; it reads every id of the active lane (as many as the workers hold)."""
        bases = [queue_base(queue) for queue in queues]
        pipe = self._pipeline()
        for base in bases:
            _read(pipe, "ZRANGE", base + ":active", 0, -1)
        lanes = [_ok(reply) or [] for reply in pipe.execute(raise_on_error=False)]
        pipe = self._pipeline()
        for base, ids in zip(bases, lanes):
            prefix = (base + ":job:").encode()
            for job_id in ids:  # bytes: an id that is not UTF-8 still names its hash
                _read(pipe, "HEXISTS", prefix + job_id, "gid")
        grouped = iter(pipe.execute(raise_on_error=False) if any(lanes) else [])
        return [sum(bool(_ok(next(grouped))) for _ in ids) for ids in lanes]

    def groups_ready(self, queue: str, offset: int = 0, limit: int = 200) -> list[str]:
        """Group ids of ``{Q}:groups:ready``, lowest score first."""
        return [group.gid for group in self.groups_ready_with_scores(queue, offset, limit)]

    def groups_ready_with_scores(
        self, queue: str, offset: int = 0, limit: int = 200
    ) -> list[GroupReady]:
        """Ready groups with the time they became ready, lowest score first."""
        key = queue_base(queue) + ":groups:ready"
        start, stop = _window(offset, limit, _GROUPS_MAX)
        try:
            return _ready_groups(_zrange(self._redis, key, start, stop))
        except redis.ResponseError:
            return []

    def group_status(
        self, queue: str, gids: Iterable[str], default_limit: int = 1
    ) -> list[GroupStatus]:
        """In-flight count, limit, queued jobs and readiness of each group in ``gids``.

        Empty gids are skipped. ``limit`` is the group's limit key when positive, else
        ``default_limit`` (at least 1); ``ready`` means the gid is in ``groups:ready``.
        """
        base = queue_base(queue)
        fallback = max(1, int(default_limit))
        wanted = [str(gid) for gid in gids if gid]
        pipe = self._pipeline()
        for gid in wanted:
            group = f"{base}:g:{gid}"
            _read(pipe, "GET", group + ":inflight")
            _read(pipe, "GET", group + ":limit")
            _read(pipe, "LLEN", group + ":wait")
            _read(pipe, "ZSCORE", base + ":groups:ready", gid)
        replies = pipe.execute(raise_on_error=False)
        statuses = []
        for i, gid in enumerate(wanted):
            inflight, limit, waiting, score = replies[4 * i : 4 * i + 4]
            own_limit = _int(_ok(limit))
            statuses.append(
                GroupStatus(
                    gid=gid,
                    inflight=_int(_ok(inflight)),
                    limit=own_limit if own_limit > 0 else fallback,
                    ready=_ok(score) is not None,
                    waiting_count=_int(_ok(waiting)),
                )
            )
        return statuses

    def lane_page(
        self, queue: str, lane: Lane, offset: int = 0, limit: int = 25, reverse: bool = False
    ) -> list[LaneJob]:
        """Up to ``limit`` (at most 25) jobs of ``lane`` by the time they entered it, oldest
        first (newest first with ``reverse``); jobs whose hash is gone are left out."""
        base = queue_base(queue)
        start, stop = _window(offset, limit, _PAGE_MAX)
        try:
            reply = _zrange(self._redis, f"{base}:idx:{lane}", start, stop, bool(reverse))
        except redis.ResponseError:
            return []
        return self._lane_jobs(base, [(lane, job_id, score) for job_id, score in _entries(reply)])

    def find_jobs(self, queue: str, lane: Lane, job_ids: Iterable[str]) -> list[LaneJob]:
        """The jobs of ``job_ids`` (in that order, duplicates kept) that are indexed in
        ``lane`` and still have a hash; empty ids are skipped."""
        base = queue_base(queue)
        index = f"{base}:idx:{lane}"
        ids = [str(job_id) for job_id in job_ids if job_id]
        # One round trip: hashes are read even for ids not in the lane, which costs less
        # than waiting for the scores first.
        pipe = self._pipeline()
        for job_id in ids:
            _read(pipe, "ZSCORE", index, job_id)
            _queue_lane_job_reads(pipe, base, job_id)
        replies = pipe.execute(raise_on_error=False)
        jobs = []
        for i, job_id in enumerate(ids):
            score, exists, values = replies[3 * i : 3 * i + 3]
            if _ok(score) is None:
                continue
            job = _lane_job(lane, job_id, _int(score), exists, values)
            if job is not None:
                jobs.append(job)
        return jobs

    def get_job(self, queue: str, job_id: str) -> Optional[JobInfo]:
        """Every field of one job, or ``None`` if it does not exist (or is unreadable)."""
        base = queue_base(queue)
        if not job_id:
            return None
        try:
            return _job_info(job_id, _read(self._redis, "HGETALL", f"{base}:job:{job_id}"))
        except redis.ResponseError:
            return None

    def get_jobs(self, queue: str, job_ids: Iterable[str]) -> list[Optional[JobInfo]]:
        """:meth:`get_job` for many ids in one round trip, in order (``None`` for a job
        that does not exist or is unreadable)."""
        base = queue_base(queue)
        ids = [str(job_id) for job_id in job_ids]
        pipe = self._pipeline()
        for job_id in ids:
            _read(pipe, "HGETALL", f"{base}:job:{job_id}")
        replies = pipe.execute(raise_on_error=False) if ids else []
        return [_job_info(job_id, reply) if job_id else None for job_id, reply in zip(ids, replies)]

    def overview(self, queue: str, samples_per_lane: int = 10) -> QueueOverview:
        """Stats plus the first ``samples_per_lane`` (1..25) ready groups and the oldest
        jobs of the active, delayed, failed and completed lanes, in two round trips."""
        count = max(1, min(int(samples_per_lane), _PAGE_MAX))
        base = queue_base(queue)
        pipe = self._pipeline()
        _read(pipe, "HGETALL", base + ":stats")
        _read(pipe, "EXISTS", base + ":paused")
        _zrange(pipe, base + ":groups:ready", 0, count - 1)
        for lane in _SAMPLED_LANES:
            _zrange(pipe, f"{base}:idx:{lane}", 0, count - 1)
        stats_reply, paused_reply, groups_reply, *lane_replies = pipe.execute(raise_on_error=False)
        entries = [
            (lane, job_id, score)
            for lane, reply in zip(_SAMPLED_LANES, lane_replies)
            for job_id, score in _entries(reply)
        ]
        by_lane: dict[str, list[LaneJob]] = {lane: [] for lane in _SAMPLED_LANES}
        for job in self._lane_jobs(base, entries):
            by_lane[job.lane].append(job)
        stats = _queue_stats(queue, stats_reply, paused_reply)
        return QueueOverview(stats, _ready_groups(groups_reply), *by_lane.values())

    def _lane_jobs(self, base: str, entries: list[tuple[Any, str, int]]) -> list[LaneJob]:
        """Fetch (lane, job id, index score) entries in one pipeline, dropping gone jobs."""
        if not entries:
            return []
        pipe = self._pipeline()
        for _, job_id, _ in entries:
            _queue_lane_job_reads(pipe, base, job_id)
        replies = pipe.execute(raise_on_error=False)
        jobs = []
        for i, (lane, job_id, score) in enumerate(entries):
            job = _lane_job(lane, job_id, score, replies[2 * i], replies[2 * i + 1])
            if job is not None:
                jobs.append(job)
        return jobs

    # ---------------------------------------------------------------- dashboard reads

    def lane_sizes(self, queue: str) -> dict[str, int]:
        """How many jobs each ``idx:<lane>`` zset holds (the lengths job pages page through),
        plus ``gwait``: how many groups are ready."""
        base = queue_base(queue)
        pipe = self._pipeline()
        for lane in LANES:
            _read(pipe, "ZCARD", f"{base}:idx:{lane}")
        _read(pipe, "ZCARD", base + ":groups:ready")
        replies = pipe.execute(raise_on_error=False)
        return {lane: _int(_ok(reply)) for lane, reply in zip((*LANES, "gwait"), replies)}

    def activity(
        self, queues: Iterable[str], marks: Optional[dict[str, tuple[int, int]]] = None
    ) -> list[QueueActivity]:
        """Sample ``queues`` in one pipeline (see :class:`QueueActivity`).

        ``marks`` maps a queue to (completed mark, failed mark), entry times in ms: jobs
        counted are those whose ``idx:completed`` / ``idx:failed`` score is above it (a
        missing mark counts nothing, so a first sample only sets the marks). The completed
        lane keeps the 100 newest jobs, so ``completed_since`` cannot exceed 100.
        """
        names = list(queues)
        marks = marks or {}
        pipe = self._pipeline()
        for name in names:
            base = queue_base(name)
            _read(pipe, "HGETALL", base + ":stats")
            _read(pipe, "EXISTS", base + ":paused")
            _read(pipe, "GET", base + ":lease:seq")
            _zrange(pipe, base + ":idx:wait", 0, 0)
            mark = marks.get(name)
            for lane, after in zip(("completed", "failed"), mark or (None, None)):
                index = f"{base}:idx:{lane}"
                # "(" makes the bound exclusive; +inf when unmarked counts nothing.
                _read(pipe, "ZCOUNT", index, "+inf" if after is None else f"({after}", "+inf")
                _zrange(pipe, index, 0, 0, reverse=True)
        replies = pipe.execute(raise_on_error=False)
        samples = []
        for i, name in enumerate(names):
            stats, paused, seq, oldest, c_count, c_newest, f_count, f_newest = (
                replies[8 * i : 8 * i + 8]
            )
            c_entries, f_entries = _entries(c_newest), _entries(f_newest)
            oldest_entries = _entries(oldest)
            samples.append(
                QueueActivity(
                    stats=_queue_stats(name, stats, paused),
                    lease_seq=_int(_ok(seq)),
                    oldest_wait_ms=oldest_entries[0][1] if oldest_entries else 0,
                    completed_since=_int(_ok(c_count)),
                    completed_newest_ms=c_entries[0][1] if c_entries else 0,
                    failed_since=_int(_ok(f_count)),
                    failed_newest_ms=f_entries[0][1] if f_entries else 0,
                )
            )
        return samples

    def groups_page(
        self, queue: str, cursor: str = "", limit: int = 50, default_limit: int = 1
    ) -> GroupsPage:
        """Up to ``limit`` (1..200) groups of ``queue`` with their status, and the cursor
        of the next page (``""`` when the listing is complete).

        Groups have no index of their own (PROTOCOL.md §2), so this walks the queue's
        ``{Q}:g:*`` keys with SCAN on the server holding the queue: the order is Redis's
        hash-table order, stable while the keyspace does not change; a page costs a bounded
        number of SCAN calls (it may come back short, with a cursor, on a huge keyspace).
        A group is listed under the first of its keys that exists, in the order wait,
        inflight, limit, so a full walk lists each group once; as with SCAN, a group
        created or emptied during the walk may be missed or seen twice.
        """
        base = queue_base(queue)
        size = max(1, min(int(limit), _GROUP_PAGE_MAX))
        scan_cursor, count, after = _parse_groups_cursor(cursor, size)
        server = self._server_of(base)
        prefix = base + ":g:"
        found: list[str] = []
        for _ in range(_GROUP_SCAN_CALLS):
            next_cursor, keys = _read(server, "SCAN", scan_cursor, "MATCH", prefix + "*",
                                      "COUNT", count)
            # Sorted, so a page that ends inside this batch can resume after its last gid:
            # the next page reads the same batch again and takes the gids above it (by
            # value, not position, so a batch that changed meanwhile repeats nothing).
            batch = sorted(self._listed_gids(base, prefix, keys))
            if after is not None:
                batch = [gid for gid in batch if gid > after]
            if len(found) + len(batch) > size:
                found.extend(batch[: size - len(found)])
                rest = f"{scan_cursor}:{count}:{found[-1]}"
                return GroupsPage(self.group_status(queue, found, default_limit), rest)
            found.extend(batch)
            after = None
            scan_cursor = int(next_cursor)
            if not scan_cursor or len(found) == size:
                break
            # Few matches per call: look at more keys per call next time.
            if len(batch) < size // 2:
                count = min(count * 2, _GROUP_SCAN_COUNT_MAX)
        rest = f"{scan_cursor}:{count}:" if scan_cursor else ""
        return GroupsPage(self.group_status(queue, found, default_limit), rest)

    def _server_of(self, key: str) -> Any:
        """The one server holding ``key``: itself, or the cluster master of its slot."""
        if isinstance(self._redis, RedisCluster):
            node = self._redis.get_node_from_key(key)  # type: ignore[no-untyped-call]
            return self._redis.get_redis_connection(node)
        return self._redis

    def _listed_gids(self, base: str, prefix: str, keys: list[Any]) -> list[str]:
        """The gids that ``keys`` (of one SCAN batch) list, each under its first key."""
        candidates = _group_keys(prefix, keys)
        pipe = self._pipeline()
        checks = 0
        for gid, rank in candidates:
            for suffix in _GROUP_KEY_SUFFIXES[:rank]:
                _read(pipe, "EXISTS", prefix + gid + suffix)
                checks += 1
        replies = iter(pipe.execute(raise_on_error=False) if checks else [])
        gids = []
        for gid, rank in candidates:
            earlier = [_int(_ok(next(replies))) for _ in range(rank)]
            if not any(earlier):
                gids.append(gid)
        return gids

    def group_wait_page(
        self, queue: str, gid: str, offset: int = 0, limit: int = 25
    ) -> list[LaneJob]:
        """Up to ``limit`` (1..200) jobs of group ``gid``'s wait list, in the order they
        will run; ``idx_score_ms`` is when each entered the wait lane."""
        base = queue_base(queue)
        if not gid:
            return []
        start, stop = _window(offset, limit, _GROUP_PAGE_MAX)
        try:
            ids = [_text(i) for i in _read(self._redis, "LRANGE", f"{base}:g:{gid}:wait",
                                           start, stop)]
        except (redis.ResponseError, UnicodeDecodeError):
            return []
        pipe = self._pipeline()
        for job_id in ids:
            _read(pipe, "ZSCORE", base + ":idx:wait", job_id)
        scores = pipe.execute(raise_on_error=False) if ids else []
        return self._lane_jobs(
            base, [("wait", job_id, _int(_ok(s))) for job_id, s in zip(ids, scores)]
        )

    def counter(self, key: str) -> CounterStatus:
        """The completion counter ``key`` (PROTOCOL.md §5 childs_init/child_ack); a
        finished or never-started counter does not exist."""
        base = counter_anchor(key)[: -len(":meta")]
        pipe = self._pipeline()
        _read(pipe, "GET", base + ":count")
        _read(pipe, "SCARD", base + ":done")
        count, done = pipe.execute(raise_on_error=False)
        return CounterStatus(
            key=key.strip(), exists=_ok(count) is not None,
            remaining=_int(_ok(count)), done=_int(_ok(done)),
        )



def _parse_groups_cursor(cursor: str, size: int) -> tuple[int, int, Optional[str]]:
    """(SCAN cursor, SCAN COUNT, gid the batch resumes after, or None) of a
    :meth:`QueueMonitor.groups_page` cursor; anything unreadable starts from the beginning."""
    try:
        scan, count, after = str(cursor).split(":", 2)
        scan_cursor, scan_count = int(scan), int(count)
    except ValueError:
        return 0, max(size * 2, 100), None
    return (max(0, scan_cursor), max(1, min(scan_count, _GROUP_SCAN_COUNT_MAX)),
            after or None)
