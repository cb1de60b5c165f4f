"""Every decision of the queue monitor, free of I/O: which reads to send, what replies mean.

(The models are in :mod:`.monitor_models`, the reply decoders in :mod:`.monitor_replies`;
this module builds the reads and sequences them.)

Each view of :class:`~omniq_fast.monitor.QueueMonitor` is a *plan* here: a generator that
yields the reads it needs and receives their replies (the sans-I/O style of h11), then
returns the view's result. A shell runs a plan with its own I/O::

    reply = None
    while True:
        step = plan.send(reply)        # StopIteration carries the result
        reply = <send step, collect its replies>

Why generators rather than (commands, decode) pairs or step functions: several views take
more than one round trip, and what the later ones read depends on the earlier replies (a
lane page reads an index, then the hashes of the ids it found; a groups page runs up to 64
SCAN calls, checking each batch of keys, then reads the status of the groups it kept).
As a generator each view reads top to bottom like the blocking code it replaced, its state
lives in local variables, and views compose with ``yield from`` (an overview ends with the
lane-jobs plan, ``stats_many(None)`` starts with ``scan_queues``). The blocking and the
asyncio shells share one small loop each and nothing else.

A plan yields two kinds of step:

* :class:`Batch`: independent reads sent in one round trip (a pipeline; on a cluster each
  goes to the master of its key's slot). The plan receives a list of replies in order; a
  read that failed (a key of the wrong type) is its exception instance, not raised. Plans
  never yield an empty batch, so an empty request costs no round trip.
* :class:`Scan`: one SCAN call to one server (SCAN is not routed by key). Its reply is
  redis-py's ``(cursor, keys)``; an error is raised.

Commands are sent with redis-py's ``NEVER_DECODE`` and no reply options, so replies do not
depend on the connection's ``decode_responses`` (bytes that are not UTF-8 then fail one
read here, not the whole pipeline inside redis-py); the decoders accept both RESP2 and
RESP3 shapes. Nothing here reads the clock: ``now_ms`` is an argument.

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

from dataclasses import dataclass
from typing import Any, Generator, Iterable, Optional, TypeVar, Union

from ..keys import (
    LANES,
    STATS_SUFFIX,
    active_key,
    counter_count_key,
    counter_done_key,
    group_key,
    group_key_prefix,
    groups_ready_key,
    index_key,
    job_key,
    job_key_prefix,
    lease_seq_key,
    paused_key,
    stats_key,
    validate_counter_key,
    validate_queue_name,
)
from .monitor_replies import (
    GROUP_KEY_PARTS,
    LANE_JOB_FIELDS,
    group_keys,
    job_info,
    lane_job,
    lenient_int,
    ok,
    queue_of_stats_key,
    queue_stats,
    ready_groups,
    score_entries,
    text,
)
from .monitor_models import (
    CounterStatus,
    GroupReady,
    GroupsPage,
    GroupStatus,
    JobInfo,
    Lane,
    LaneJob,
    QueueActivity,
    QueueOverview,
    QueueStats,
)

__all__ = [
    "Command", "Batch", "Scan", "Step", "Plan",
    "scan_queues", "stats", "stats_many", "oldest_waiting_ms", "scan_groups",
    "oldest_waiting_ages_ms", "grouped_active_many", "groups_ready",
    "groups_ready_with_scores", "group_status", "lane_page", "find_jobs", "get_job",
    "get_jobs", "overview", "lane_sizes", "activity", "groups_page", "group_wait_page",
    "counter",
]

_T = TypeVar("_T")

#: One command: its name and arguments, as redis-py's ``execute_command`` takes them.
Command = tuple[Union[str, bytes, int], ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """Independent reads for one round trip; the plan receives their replies in order,
    a failed read's reply being its exception."""

    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Scan:
    """One SCAN call, sent to the server holding key ``node_of`` or, when that is
    ``None``, to server number ``server`` of the list the plan was made for."""

    command: Command
    node_of: Optional[str] = None
    server: int = 0


Step = Union[Batch, Scan]
#: A view's plan: yields steps, receives each step's reply, returns the view's result.
Plan = Generator[Step, Any, _T]

_PAGE_MAX = 25
_GROUPS_MAX = 500
#: Largest page of ``groups_page`` and ``group_wait_page``.
_GROUP_PAGE_MAX = 200
#: SCAN calls one groups page may make: bounds a page's cost on a huge keyspace (the page
#: then comes back short, with a cursor to go on from).
_GROUP_SCAN_CALLS = 64
_GROUP_SCAN_COUNT_MAX = 2000
_SCAN_COUNT = 1000
#: Lanes an overview samples, in the order of :class:`QueueOverview`'s fields.
_SAMPLED_LANES = ("active", "delayed", "failed", "completed")


def _window(offset: Any, limit: Any, cap: int) -> tuple[int, int]:
    """Inclusive ZRANGE bounds: offset floored at 0, limit clamped to 1..cap."""
    start = max(0, int(offset))
    return start, start + max(1, min(int(limit), cap)) - 1


def _zrange(key: str, start: int, stop: int, reverse: bool = False) -> Command:
    return ("ZREVRANGE" if reverse else "ZRANGE", key, start, stop, "WITHSCORES")


def _stats_reads(queue: str) -> list[Command]:
    return [("HGETALL", stats_key(queue)), ("EXISTS", paused_key(queue))]


def _lane_job_reads(queue: str, job_id: str) -> list[Command]:
    # EXISTS tells a missing hash from one lacking every listed field, which the official
    # monitor still lists (with defaults).
    key = job_key(queue, job_id)
    return [("EXISTS", key), ("HMGET", key, *LANE_JOB_FIELDS)]


def _parse_groups_cursor(cursor: str, size: int) -> tuple[int, int, Optional[str]]:
    """(SCAN cursor, SCAN COUNT, gid the batch resumes after, or None) of a
    :func:`groups_page` cursor; anything unreadable starts from the beginning."""
    try:
        scan, count, after = str(cursor).split(":", 2)
        scan_cursor, scan_count = int(scan), int(count)
    except ValueError:
        return 0, max(size * 2, 100), None
    return (max(0, scan_cursor), max(1, min(scan_count, _GROUP_SCAN_COUNT_MAX)),
            after or None)


def _send(commands: list[Command]) -> Plan[list[Any]]:
    """One batch of ``commands`` and its replies; none at all (no round trip) if empty."""
    if not commands:
        return []
    replies: list[Any] = yield Batch(tuple(commands))
    return replies


def _scan(
    command: Command, node_of: Optional[str] = None, server: int = 0
) -> Plan[tuple[int, list[Any]]]:
    """One SCAN step and its reply as (next cursor, keys)."""
    cursor, keys = yield Scan(command, node_of, server)
    return int(cursor), list(keys)


# ------------------------------------------------------------------------------- plans


def scan_queues(servers: int) -> Plan[list[str]]:
    """Names of the queues that have a stats hash on any of ``servers`` servers (a
    cluster's masters), sorted, each once."""
    names: set[str] = set()
    for server in range(servers):
        cursor = 0
        while True:
            cursor, keys = yield from _scan(
                ("SCAN", cursor, "MATCH", "*" + STATS_SUFFIX, "COUNT", _SCAN_COUNT,
                 "TYPE", "hash"),
                server=server,
            )
            names.update(name for name in map(queue_of_stats_key, keys) if name is not None)
            if not cursor:
                break
    return sorted(names)


def stats(queue: str) -> Plan[QueueStats]:
    """The counters of ``queue``; all zero when it has no stats hash."""
    found = yield from stats_many([queue], 0)
    return found[0]


def stats_many(queues: Optional[Iterable[str]], servers: int) -> Plan[list[QueueStats]]:
    """Stats of ``queues`` in order (duplicates kept), or of every queue
    :func:`scan_queues` finds on ``servers`` servers when ``queues`` is ``None``."""
    names = (yield from scan_queues(servers)) if queues is None else list(queues)
    replies = yield from _send([read for name in names for read in _stats_reads(name)])
    return [queue_stats(q, replies[2 * i], replies[2 * i + 1]) for i, q in enumerate(names)]


def oldest_waiting_ms(queues: Iterable[str]) -> Plan[list[Optional[int]]]:
    """When each queue's oldest waiting job entered ``idx:wait``, or ``None``."""
    reads = [_zrange(index_key(name, "wait"), 0, 0) for name in queues]
    replies = yield from _send(reads)
    oldest: list[Optional[int]] = []
    for reply in replies:
        entries = score_entries(reply)
        oldest.append(entries[0][1] if entries else None)
    return oldest


def scan_groups(queue: str) -> Plan[list[str]]:
    """Every group id of ``queue`` that has a key, sorted: a SCAN of the queue's node."""
    prefix = group_key_prefix(queue)
    # Queue names have no glob characters, and braces are not glob syntax.
    gids: set[str] = set()
    cursor = 0
    while True:
        cursor, keys = yield from _scan(
            ("SCAN", cursor, "MATCH", prefix + "*", "COUNT", _SCAN_COUNT), node_of=prefix
        )
        gids.update(gid for gid, _ in group_keys(prefix, keys))
        if not cursor:
            break
    return sorted(gids)


def oldest_waiting_ages_ms(queues: Iterable[str], now_ms: int) -> Plan[list[int]]:
    """How long each queue's longest-waiting job has been ready at ``now_ms``; 0 if none."""
    oldest = yield from oldest_waiting_ms(queues)
    return [0 if at is None else max(0, now_ms - at) for at in oldest]


def grouped_active_many(queues: Iterable[str]) -> Plan[list[int]]:
    """How many leased jobs of each queue belong to a group (two round trips)."""
    names = list(queues)
    prefixes = [job_key_prefix(name).encode() for name in names]
    lanes = yield from _send([("ZRANGE", active_key(name), 0, -1) for name in names])
    ids = [ok(reply) or [] for reply in lanes]
    # Bytes: an id that is not UTF-8 still names its hash.
    replies = yield from _send(
        [("HEXISTS", prefix + job_id, "gid") for prefix, lane in zip(prefixes, ids)
         for job_id in lane]
    )
    grouped = iter(replies)
    return [sum(bool(ok(next(grouped))) for _ in lane) for lane in ids]


def groups_ready_with_scores(queue: str, offset: int, limit: int) -> Plan[list[GroupReady]]:
    """Ready groups with the time they became ready, lowest score first."""
    key = groups_ready_key(queue)
    start, stop = _window(offset, limit, _GROUPS_MAX)
    (reply,) = yield from _send([_zrange(key, start, stop)])
    return ready_groups(reply)


def groups_ready(queue: str, offset: int, limit: int) -> Plan[list[str]]:
    """Group ids of ``{Q}:groups:ready``, lowest score first."""
    groups = yield from groups_ready_with_scores(queue, offset, limit)
    return [group.gid for group in groups]


def group_status(queue: str, gids: Iterable[str], default_limit: int) -> Plan[list[GroupStatus]]:
    """In-flight count, limit, queued jobs and readiness of each non-empty gid."""
    ready = groups_ready_key(queue)
    fallback = max(1, int(default_limit))
    wanted = [str(gid) for gid in gids if gid]
    replies = yield from _send([
        read
        for gid in wanted
        for read in (("GET", group_key(queue, gid, "inflight")),
                     ("GET", group_key(queue, gid, "limit")),
                     ("LLEN", group_key(queue, gid, "wait")),
                     ("ZSCORE", ready, gid))
    ])
    statuses = []
    for i, gid in enumerate(wanted):
        inflight, limit, waiting, score = replies[4 * i : 4 * i + 4]
        own_limit = lenient_int(ok(limit))
        statuses.append(
            GroupStatus(
                gid=gid,
                inflight=lenient_int(ok(inflight)),
                limit=own_limit if own_limit > 0 else fallback,
                ready=ok(score) is not None,
                waiting_count=lenient_int(ok(waiting)),
            )
        )
    return statuses


def _lane_jobs(queue: str, entries: list[tuple[Any, str, int]]) -> Plan[list[LaneJob]]:
    """Read (lane, job id, index score) entries in one batch, dropping gone jobs."""
    replies = yield from _send(
        [read for _, job_id, _ in entries for read in _lane_job_reads(queue, job_id)]
    )
    jobs = []
    for i, (lane, job_id, score) in enumerate(entries):
        job = lane_job(lane, job_id, score, replies[2 * i], replies[2 * i + 1])
        if job is not None:
            jobs.append(job)
    return jobs


def lane_page(
    queue: str, lane: Lane, offset: int, limit: int, reverse: bool
) -> Plan[list[LaneJob]]:
    """Up to ``limit`` (1..25) jobs of ``lane`` by entry time; gone jobs left out."""
    key = index_key(queue, lane)
    start, stop = _window(offset, limit, _PAGE_MAX)
    (reply,) = yield from _send([_zrange(key, start, stop, bool(reverse))])
    entries = [(lane, job_id, score) for job_id, score in score_entries(reply)]
    return (yield from _lane_jobs(queue, entries))


def find_jobs(queue: str, lane: Lane, job_ids: Iterable[str]) -> Plan[list[LaneJob]]:
    """The jobs of ``job_ids`` indexed in ``lane`` that still have a hash, in order."""
    index = index_key(queue, lane)
    ids = [str(job_id) for job_id in job_ids if job_id]
    # One round trip: hashes are read even for ids not in the lane, which costs less
    # than waiting for the scores first.
    replies = yield from _send([
        read for job_id in ids
        for read in [("ZSCORE", index, job_id), *_lane_job_reads(queue, job_id)]
    ])
    jobs = []
    for i, job_id in enumerate(ids):
        score, exists, values = replies[3 * i : 3 * i + 3]
        if ok(score) is None:
            continue
        job = lane_job(lane, job_id, lenient_int(score), exists, values)
        if job is not None:
            jobs.append(job)
    return jobs


def get_job(queue: str, job_id: str) -> Plan[Optional[JobInfo]]:
    """Every field of one job, or ``None`` if it does not exist (or is unreadable)."""
    validate_queue_name(queue)
    if not job_id:
        return None
    (reply,) = yield from _send([("HGETALL", job_key(queue, job_id))])
    return job_info(job_id, reply)


def get_jobs(queue: str, job_ids: Iterable[str]) -> Plan[list[Optional[JobInfo]]]:
    """:func:`get_job` for many ids in one round trip, in order."""
    validate_queue_name(queue)
    ids = [str(job_id) for job_id in job_ids]
    replies = yield from _send([("HGETALL", job_key(queue, job_id)) for job_id in ids])
    return [job_info(job_id, reply) if job_id else None for job_id, reply in zip(ids, replies)]


def overview(queue: str, samples_per_lane: int) -> Plan[QueueOverview]:
    """Stats, the first ready groups and the oldest jobs of four lanes (two round trips)."""
    count = max(1, min(int(samples_per_lane), _PAGE_MAX))
    reads = _stats_reads(queue) + [_zrange(groups_ready_key(queue), 0, count - 1)]
    reads += [_zrange(index_key(queue, lane), 0, count - 1) for lane in _SAMPLED_LANES]
    stats_reply, paused_reply, groups_reply, *lane_replies = yield from _send(reads)
    entries = [
        (lane, job_id, score)
        for lane, reply in zip(_SAMPLED_LANES, lane_replies)
        for job_id, score in score_entries(reply)
    ]
    by_lane: dict[str, list[LaneJob]] = {lane: [] for lane in _SAMPLED_LANES}
    for job in (yield from _lane_jobs(queue, entries)):
        by_lane[job.lane].append(job)
    found = queue_stats(queue, stats_reply, paused_reply)
    return QueueOverview(found, ready_groups(groups_reply), *by_lane.values())


def lane_sizes(queue: str) -> Plan[dict[str, int]]:
    """The size of each ``idx:<lane>`` zset, and ``gwait``: how many groups are ready."""
    reads: list[Command] = [("ZCARD", index_key(queue, lane)) for lane in LANES]
    replies = yield from _send(reads + [("ZCARD", groups_ready_key(queue))])
    return {lane: lenient_int(ok(reply)) for lane, reply in zip((*LANES, "gwait"), replies)}


def activity(
    queues: Iterable[str], marks: Optional[dict[str, tuple[int, int]]]
) -> Plan[list[QueueActivity]]:
    """A :class:`QueueActivity` of each queue, in one round trip."""
    names = list(queues)
    marks = marks or {}
    reads: list[Command] = []
    for name in names:
        reads += _stats_reads(name)
        reads += [("GET", lease_seq_key(name)), _zrange(index_key(name, "wait"), 0, 0)]
        for lane, after in zip(("completed", "failed"), marks.get(name) or (None, None)):
            index = index_key(name, lane)
            # "(" makes the bound exclusive; +inf when unmarked counts nothing.
            reads += [("ZCOUNT", index, "+inf" if after is None else f"({after}", "+inf"),
                      _zrange(index, 0, 0, reverse=True)]
    replies = yield from _send(reads)
    samples = []
    for i, name in enumerate(names):
        stats_reply, paused, seq, oldest, c_count, c_newest, f_count, f_newest = (
            replies[8 * i : 8 * i + 8]
        )
        c_entries, f_entries, oldest_entries = (
            score_entries(c_newest), score_entries(f_newest), score_entries(oldest)
        )
        samples.append(
            QueueActivity(
                stats=queue_stats(name, stats_reply, paused),
                lease_seq=lenient_int(ok(seq)),
                oldest_wait_ms=oldest_entries[0][1] if oldest_entries else 0,
                completed_since=lenient_int(ok(c_count)),
                completed_newest_ms=c_entries[0][1] if c_entries else 0,
                failed_since=lenient_int(ok(f_count)),
                failed_newest_ms=f_entries[0][1] if f_entries else 0,
            )
        )
    return samples


def _listed_gids(queue: str, keys: list[Any]) -> Plan[list[str]]:
    """The gids that ``keys`` (of one SCAN batch of ``queue``'s group keys) list, each under
    its first key: a gid seen by a later part is kept only when none of its earlier parts
    exists."""
    candidates = group_keys(group_key_prefix(queue), keys)
    replies = yield from _send([
        ("EXISTS", group_key(queue, gid, part))
        for gid, rank in candidates
        for part in GROUP_KEY_PARTS[:rank]
    ])
    earlier = iter(replies)
    return [gid for gid, rank in candidates
            if not any([lenient_int(ok(next(earlier))) for _ in range(rank)])]


def groups_page(queue: str, cursor: str, limit: int, default_limit: int) -> Plan[GroupsPage]:
    """Up to ``limit`` (1..200) groups with their status, and the next page's cursor.

    A bounded number of SCAN calls on the queue's node; a page that ends inside a SCAN
    batch resumes after its last gid (see ``QueueMonitor.groups_page``). As with SCAN, a
    group may come again on a later page when the server resizes its keyspace table
    between two pages."""
    prefix = group_key_prefix(queue)
    size = max(1, min(int(limit), _GROUP_PAGE_MAX))
    scan_cursor, count, after = _parse_groups_cursor(cursor, size)
    found: list[str] = []
    rest: Optional[str] = None
    for _ in range(_GROUP_SCAN_CALLS):
        next_cursor, keys = yield from _scan(
            ("SCAN", scan_cursor, "MATCH", prefix + "*", "COUNT", count), node_of=prefix
        )
        # Sorted, so a page that ends inside this batch can resume after its last gid:
        # the next page reads the same batch again and takes the gids above it (by
        # value, not position, so a batch that changed meanwhile repeats nothing).
        batch = sorted((yield from _listed_gids(queue, keys)))
        if after is not None:
            batch = [gid for gid in batch if gid > after]
        if len(found) + len(batch) > size:
            found.extend(batch[: size - len(found)])
            rest = f"{scan_cursor}:{count}:{found[-1]}"
            break
        found.extend(batch)
        after = None
        scan_cursor = next_cursor
        if not scan_cursor or len(found) == size:
            break
        # Few matches per call: look at more keys per call next time.
        if len(batch) < size // 2:
            count = min(count * 2, _GROUP_SCAN_COUNT_MAX)
    if rest is None:
        rest = f"{scan_cursor}:{count}:" if scan_cursor else ""
    groups = yield from group_status(queue, found, default_limit)
    return GroupsPage(groups, rest)


def group_wait_page(queue: str, gid: str, offset: int, limit: int) -> Plan[list[LaneJob]]:
    """Up to ``limit`` (1..200) jobs of group ``gid``'s wait list, in the order they run."""
    validate_queue_name(queue)
    if not gid:
        return []
    start, stop = _window(offset, limit, _GROUP_PAGE_MAX)
    (reply,) = yield from _send([("LRANGE", group_key(queue, gid, "wait"), start, stop)])
    try:
        ids = [text(job_id) for job_id in ok(reply) or []]
    except UnicodeDecodeError:
        return []
    scores = yield from _send([("ZSCORE", index_key(queue, "wait"), job_id) for job_id in ids])
    return (yield from _lane_jobs(
        queue, [("wait", job_id, lenient_int(ok(score))) for job_id, score in zip(ids, scores)]
    ))


def counter(key: str) -> Plan[CounterStatus]:
    """The completion counter ``key``: whether it exists, children left, children done."""
    count, done = yield from _send([("GET", counter_count_key(key)),
                                    ("SCARD", counter_done_key(key))])
    return CounterStatus(
        key=validate_counter_key(key), exists=ok(count) is not None,
        remaining=lenient_int(ok(count)), done=lenient_int(ok(done)),
    )
