"""Every Redis key name omniq-fast uses is built here (PROTOCOL.md §1-2).

Scripts receive exactly one key, the anchor, and derive the rest inside Lua; the client
builds keys itself only for plain reads (``is_paused``, monitoring).
"""

from __future__ import annotations

import re

from .errors import InvalidKey, InvalidQueueName

__all__ = [
    "QUEUE_NAME_MAX_LEN",
    "validate_queue_name",
    "queue_base",
    "queue_anchor",
    "validate_counter_key",
    "counter_anchor",
    "LANES",
    "REMOVE_LANES",
    "STATS_SUFFIX",
    "job_key",
    "job_key_prefix",
    "stats_key",
    "paused_key",
    "wake_channel",
    "index_key",
    "active_key",
    "lease_seq_key",
    "groups_ready_key",
    "group_key_prefix",
    "group_key",
    "counter_count_key",
    "counter_done_key",
]

QUEUE_NAME_MAX_LEN = 128
_QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9._-]+\Z")

#: Lanes that have an ``idx:<lane>`` zset (monitoring pages).
LANES = ("wait", "active", "delayed", "failed", "completed")
#: Lanes ``remove_job`` accepts.
REMOVE_LANES = frozenset(("wait", "delayed", "failed", "completed", "gwait"))


def validate_queue_name(name: object) -> str:
    """Return ``name`` if it is a valid queue name, else raise :class:`InvalidQueueName`."""
    if not isinstance(name, str):
        raise InvalidQueueName(f"queue name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidQueueName("queue name is required")
    if name != name.strip():
        raise InvalidQueueName("queue name must not have leading or trailing whitespace")
    if len(name) > QUEUE_NAME_MAX_LEN:
        raise InvalidQueueName(f"queue name too long (max {QUEUE_NAME_MAX_LEN} chars)")
    if _QUEUE_NAME_RE.match(name) is None:
        raise InvalidQueueName(
            f"queue name {name!r} contains invalid characters; "
            "allowed: letters, numbers, '.', '_', '-'"
        )
    return name


def queue_base(queue: str) -> str:
    """``{Q}``: the braces put every key of a queue in one Redis Cluster slot."""
    return "{" + validate_queue_name(queue) + "}"


#: Anchors of names already validated: every call checks its queue name, and a process
#: uses few queues, so a hit costs one dict lookup instead of the checks and a regex.
_ANCHORS: dict[str, str] = {}
_ANCHORS_MAX = 4096


def queue_anchor(queue: str) -> str:
    """``{Q}:meta``, the single key every queue script receives."""
    if type(queue) is str:  # a str subclass or an unhashable value takes the checks
        anchor = _ANCHORS.get(queue)
        if anchor is not None:
            return anchor
    anchor = queue_base(queue) + ":meta"
    if len(_ANCHORS) >= _ANCHORS_MAX:
        _ANCHORS.clear()
    _ANCHORS[queue] = anchor
    return anchor


def validate_counter_key(key: object) -> str:
    """Return the trimmed completion-counter key, or raise :class:`InvalidKey`."""
    if not isinstance(key, str):
        raise InvalidKey(f"counter key must be a str, not {type(key).__name__}")
    key = key.strip()
    if not key:
        raise InvalidKey("counter key is required")
    if len(key) > QUEUE_NAME_MAX_LEN:
        raise InvalidKey(f"counter key too long (max {QUEUE_NAME_MAX_LEN} chars)")
    if "{" in key or "}" in key:
        raise InvalidKey("counter key must not contain '{' or '}'")
    return key


def _counter_base(key: str) -> str:
    return "{cc:" + validate_counter_key(key) + "}"


def counter_anchor(key: str) -> str:
    """``{cc:K}:meta``, the anchor of a completion counter."""
    return _counter_base(key) + ":meta"


#: What every queue's stats key ends with (``{Q}:stats``): monitors find queues by it.
STATS_SUFFIX = ":stats"


def job_key(queue: str, job_id: str) -> str:
    """``{Q}:job:<id>``, one job's hash."""
    return f"{queue_base(queue)}:job:{job_id}"


def job_key_prefix(queue: str) -> str:
    """``{Q}:job:``, for job ids that are bytes (an id that is not UTF-8 still names
    its hash)."""
    return queue_base(queue) + ":job:"


def stats_key(queue: str) -> str:
    """``{Q}:stats``, the queue's counters hash."""
    return queue_base(queue) + STATS_SUFFIX


def paused_key(queue: str) -> str:
    """``{Q}:paused``, present while the queue is paused."""
    return queue_base(queue) + ":paused"


def index_key(queue: str, lane: str) -> str:
    """``{Q}:idx:<lane>``, the zset of a lane's job ids by when they entered it."""
    return f"{queue_base(queue)}:idx:{lane}"


def active_key(queue: str) -> str:
    """``{Q}:active``, the leased jobs by lease expiry."""
    return queue_base(queue) + ":active"


def lease_seq_key(queue: str) -> str:
    """``{Q}:lease:seq``, the counter of reservations ever made."""
    return queue_base(queue) + ":lease:seq"


def groups_ready_key(queue: str) -> str:
    """``{Q}:groups:ready``, the zset of groups that may run a job."""
    return queue_base(queue) + ":groups:ready"


def group_key_prefix(queue: str) -> str:
    """``{Q}:g:``, what every key of the queue's groups starts with."""
    return queue_base(queue) + ":g:"


def group_key(queue: str, gid: str, part: str) -> str:
    """``{Q}:g:<gid>:<part>``: a group's ``wait`` list, ``inflight`` count or ``limit``."""
    return f"{queue_base(queue)}:g:{gid}:{part}"


def counter_count_key(key: str) -> str:
    """``{cc:K}:count``, how many children a completion counter still expects."""
    return _counter_base(key) + ":count"


def counter_done_key(key: str) -> str:
    """``{cc:K}:done``, the set of children that acked."""
    return _counter_base(key) + ":done"


def wake_channel(queue: str) -> str:
    """``{Q}:wake``: the pub/sub channel omniq-fast producers notify after queueing jobs
    (hash-tagged like the queue's keys, so sharded pub/sub lands on the queue's node)."""
    return queue_base(queue) + ":wake"
