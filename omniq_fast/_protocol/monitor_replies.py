"""What the monitor's replies mean: lenient numbers, strict UTF-8, defaults for failed reads.

Pure functions from redis-py replies (sent with ``NEVER_DECODE``, no reply options, so
bytes, RESP2 or RESP3 shapes) to the monitor's models; :mod:`.monitor` builds the reads.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import InvalidQueueName
from ..keys import STATS_SUFFIX, validate_queue_name
from .monitor_models import GroupReady, JobInfo, LaneJob, QueueStats

__all__ = [
    "LANE_JOB_FIELDS", "GROUP_KEY_PARTS", "text", "lenient_int", "ok", "hash_fields",
    "score_entries", "queue_of_stats_key", "queue_stats", "ready_groups", "lane_job",
    "job_info", "group_keys",
]

_STATS_INT_FIELDS = tuple(QueueStats.__dataclass_fields__)[2:]  # all but queue, paused
#: Job-hash fields a lane page shows, in :class:`LaneJob` order (HMGET asks for just these,
#: so a page never transfers payloads).
LANE_JOB_FIELDS = tuple(LaneJob.__dataclass_fields__)[3:]
_TEXT_FIELDS = frozenset(("state", "gid", "lease_token", "payload", "last_error"))
#: The parts of a group's keys (PROTOCOL.md §2), in the order that picks the one key a
#: group is listed under (see :func:`.monitor.groups_page`).
GROUP_KEY_PARTS = ("wait", "inflight", "limit")


def text(value: Any) -> Any:
    # Strict UTF-8: the official client decodes every reply, so data that does not decode
    # makes its whole read fail (and fall back to the default) there too.
    return value.decode() if isinstance(value, bytes) else value


def lenient_int(value: Any) -> int:
    """Lenient integer, as the official SDK reads every counter, time and score."""
    if value is None:
        return 0
    try:
        return int(float(text(value)))
    except (ValueError, OverflowError, TypeError):  # UnicodeDecodeError is a ValueError
        return 0


def ok(reply: Any) -> Any:
    """A batch reply, or ``None`` when that read failed (wrong key type...)."""
    return None if isinstance(reply, Exception) else reply


def hash_fields(reply: Any) -> Optional[dict[str, str]]:
    """An HGETALL reply as str→str, or ``None`` if it failed or does not decode."""
    reply = ok(reply)
    if reply is None:
        return None
    items = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])
    try:
        return {text(k): text(v) for k, v in items}
    except UnicodeDecodeError:
        return None


def score_entries(reply: Any) -> list[tuple[str, int]]:
    """A ZRANGE WITHSCORES reply as (member, score) pairs; empty if any is unreadable.

    RESP3 gives ``[member, score]`` pairs, RESP2 one flat list."""
    reply = ok(reply)
    if not reply:
        return []
    pairs = reply if isinstance(reply[0], (list, tuple)) else zip(reply[::2], reply[1::2])
    try:
        return [(text(member), lenient_int(score)) for member, score in pairs]
    except UnicodeDecodeError:
        return []


def queue_of_stats_key(key: Any) -> Optional[str]:
    """The queue a ``{Q}:stats`` key belongs to, or ``None`` if it names no valid queue.

    As in the official scan, surrounding whitespace goes before the braces, and a
    brace-less ``Q:stats`` counts as queue ``Q`` too.
    """
    try:
        name = text(key)[: -len(STATS_SUFFIX)].strip()
    except UnicodeDecodeError:  # the official scan crashes here; such a key names no queue
        return None
    if len(name) >= 2 and name[0] == "{" and name[-1] == "}":
        name = name[1:-1]
    try:
        return validate_queue_name(name)
    except InvalidQueueName:
        return None


def queue_stats(queue: str, stats_reply: Any, paused_reply: Any) -> QueueStats:
    fields = hash_fields(stats_reply) or {}
    counts = {name: lenient_int(fields.get(name)) for name in _STATS_INT_FIELDS}
    # The official monitor shows the sum of the parts when the total is not positive but
    # a part is; kept so both show the same numbers.
    if counts["waiting_total"] <= 0 and (counts["waiting"] > 0 or counts["group_waiting"] > 0):
        counts["waiting_total"] = counts["waiting"] + counts["group_waiting"]
    return QueueStats(queue=queue, paused=bool(lenient_int(ok(paused_reply))), **counts)


def ready_groups(reply: Any) -> list[GroupReady]:
    return [GroupReady(gid=gid, score_ms=score) for gid, score in score_entries(reply)]


def lane_job(lane: Any, job_id: str, score: int, exists: Any, values: Any) -> Optional[LaneJob]:
    """A :class:`LaneJob` from EXISTS + HMGET replies, or ``None`` if the hash is gone."""
    values = ok(values)
    if not ok(exists) or values is None:
        return None
    try:
        texts = [text(v) for v in values]
    except UnicodeDecodeError:
        return None
    fields: dict[str, Any] = {
        name: (value or "") if name in _TEXT_FIELDS else lenient_int(value)
        for name, value in zip(LANE_JOB_FIELDS, texts)
    }
    return LaneJob(lane=lane, job_id=job_id, idx_score_ms=score, **fields)


def job_info(job_id: str, reply: Any) -> Optional[JobInfo]:
    fields = hash_fields(reply)
    if not fields:  # HGETALL of a missing key is empty
        return None
    values: dict[str, Any] = {
        name: fields.get(name, "") if name in _TEXT_FIELDS else lenient_int(fields.get(name))
        for name in JobInfo.__dataclass_fields__
        if name != "job_id"
    }
    return JobInfo(job_id=job_id, **values)


def group_keys(prefix: str, keys: list[Any]) -> list[tuple[str, int]]:
    """The ``(gid, rank)`` each group key of ``keys`` names, rank being its part's place
    in :data:`GROUP_KEY_PARTS`; keys that are no group's (or not UTF-8) are skipped."""
    found: list[tuple[str, int]] = []
    for key in keys:
        try:
            rest = text(key)[len(prefix):]
        except UnicodeDecodeError:
            continue
        for rank, part in enumerate(GROUP_KEY_PARTS):
            if rest.endswith(":" + part) and len(rest) > len(part) + 1:
                found.append((rest[: -len(part) - 1], rank))
                break
    return found
