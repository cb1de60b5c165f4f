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


def counter_anchor(key: str) -> str:
    """``{cc:K}:meta``, the anchor of a completion counter."""
    return "{cc:" + validate_counter_key(key) + "}:meta"


def job_key(queue: str, job_id: str) -> str:
    return f"{queue_base(queue)}:job:{job_id}"


def stats_key(queue: str) -> str:
    return queue_base(queue) + ":stats"


def paused_key(queue: str) -> str:
    return queue_base(queue) + ":paused"


def wake_channel(queue: str) -> str:
    """``{Q}:wake``: the pub/sub channel omniq-fast producers notify after queueing jobs
    (hash-tagged like the queue's keys, so sharded pub/sub lands on the queue's node)."""
    return queue_base(queue) + ":wake"
