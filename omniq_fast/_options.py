"""Checks of caller-supplied options, shared by the client and both cores.

Every check raises a typed error (a ``ValueError``) before anything is sent.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Tuple

from .errors import InvalidArgument, InvalidOptionType
from .types import Job

__all__ = [
    "check_int", "check_number", "check_id", "EnqueueOptions", "enqueue_options",
    "job_options", "check_jobs", "MAX_ID_LEN", "MAX_ATTEMPTS", "MAX_TIMEOUT_MS",
    "MAX_BACKOFF_MS", "MAX_EPOCH_MS", "MAX_GROUP_LIMIT",
    "check_consumer_options", "check_flag",
]  # fmt: skip

MAX_ID_LEN = 256

# Upper bounds of the publish options. The scripts compute in Lua doubles and write numbers
# with tostring, which switches to exponent notation ("1e+14") from 10^14 on: a deadline
# (now + timeout_ms), a due time (now + backoff_ms) or a counter at or past that is stored
# and answered as text no SDK parses as an integer. These keep every sum below 10^14.

#: Most attempts a job may be given.
MAX_ATTEMPTS = 1_000_000
#: Longest lease: 366 days.
MAX_TIMEOUT_MS = 366 * 86_400_000
#: Longest retry backoff: 366 days.
MAX_BACKOFF_MS = 366 * 86_400_000
#: Latest time a caller may name (``due_ms``, ``now_ms_override``): 2286-11-20, the last
#: epoch millisecond with 13 digits; a lease or backoff added to it stays below 10^14.
MAX_EPOCH_MS = 9_999_999_999_999
#: Largest group concurrency limit.
MAX_GROUP_LIMIT = 1_000_000

#: Validated (max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit).
EnqueueOptions = Tuple[int, int, int, int, str, int]


def check_int(name: str, value: object, minimum: int, maximum: Optional[int] = None) -> int:
    """``value`` if it is an int ``>= minimum`` (and ``<= maximum`` if given); bool is
    refused (``True`` as a timeout is a bug in the caller, not 1 ms)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise InvalidArgument(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"{name} must be <= {maximum}, got {value}")
    return value


def check_number(name: str, value: object, minimum: float) -> float:
    """``value`` if it is a finite int or float ``>= minimum`` (bool refused)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be a number, not {type(value).__name__}")
    if not minimum <= value < float("inf"):
        raise InvalidArgument(f"{name} must be a finite number >= {minimum}, got {value}")
    return float(value)


def check_id(name: str, value: object) -> str:
    """A non-empty str of at most 256 characters (job ids, gids, child ids)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidArgument(f"{name} is required")
    if len(value) > MAX_ID_LEN:
        raise InvalidArgument(f"{name} too long (max {MAX_ID_LEN} chars)")
    return value


def enqueue_options(
    max_attempts: int,
    timeout_ms: int,
    backoff_ms: int,
    due_ms: int,
    gid: Optional[str],
    group_limit: int,
) -> EnqueueOptions:
    """The publish options, checked; ``gid`` ``None`` or ``""`` means ungrouped."""
    if (
        # The common case in one expression (``type(x) is int`` refuses bool too); any
        # doubt falls through to the checks that say what is wrong.
        (gid is None or gid == "") and group_limit == 0 and type(max_attempts) is int
        and type(timeout_ms) is int and type(backoff_ms) is int and type(due_ms) is int
        and type(group_limit) is int and 1 <= max_attempts <= MAX_ATTEMPTS
        and 1 <= timeout_ms <= MAX_TIMEOUT_MS and 0 <= backoff_ms <= MAX_BACKOFF_MS
        and 0 <= due_ms <= MAX_EPOCH_MS
    ):  # fmt: skip
        return (max_attempts, timeout_ms, backoff_ms, due_ms, "", 0)
    check_int("max_attempts", max_attempts, 1, MAX_ATTEMPTS)
    check_int("timeout_ms", timeout_ms, 1, MAX_TIMEOUT_MS)
    check_int("backoff_ms", backoff_ms, 0, MAX_BACKOFF_MS)
    check_int("due_ms", due_ms, 0, MAX_EPOCH_MS)
    check_int("group_limit", group_limit, 0, MAX_GROUP_LIMIT)
    if gid is None:
        gid = ""
    elif gid != "":
        check_id("gid", gid)
    if group_limit and not gid:
        raise InvalidArgument("group_limit needs a gid")
    return (max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit)


def job_options(job: Job, defaults: EnqueueOptions) -> EnqueueOptions:
    """A :class:`Job`'s own options over ``defaults``, checked."""
    d_attempts, d_timeout, d_backoff, d_due, d_gid, d_limit = defaults
    return enqueue_options(
        d_attempts if job.max_attempts is None else job.max_attempts,
        d_timeout if job.timeout_ms is None else job.timeout_ms,
        d_backoff if job.backoff_ms is None else job.backoff_ms,
        d_due if job.due_ms is None else job.due_ms,
        d_gid if job.gid is None else job.gid,
        d_limit if job.group_limit is None else job.group_limit,
    )


def check_jobs(items: Sequence[Any], defaults: EnqueueOptions) -> None:
    """The options and ids of every :class:`Job` of ``items``, checked, so a bad item in a
    list refuses the whole ``publish_many`` before its first batch is sent (payloads are
    checked as they are encoded)."""
    for item in items:
        if isinstance(item, Job):
            job_options(item, defaults)
            if item.job_id:
                check_id("job_id", item.job_id)


# --------------------------------------------------------------------------- consumer options

#: Shortest and longest wait a consumer option may name, in seconds: shorter turns the
#: dispatcher into a busy loop of script calls, longer is a unit mistake (and past
#: ``threading.TIMEOUT_MAX`` a crash).
MIN_INTERVAL_S = 0.001
MAX_INTERVAL_S = 3600.0
#: Longest an ack may wait to share a round trip.
MAX_ACK_DELAY_S = 10.0
#: Most jobs one batched script call takes (promote, reap, reserve, acks).
MAX_CONSUMER_BATCH = 1000
#: Most handlers one consumer runs at once (threads, or coroutines for ``async def``).
MAX_CONCURRENCY = 1024


def _consumer_int(name: str, value: object, minimum: int, maximum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOptionType(f"{name} must be an int, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"{name} must be between {minimum} and {maximum}, got {value}")


def _consumer_seconds(name: str, value: object, minimum: float, maximum: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidOptionType(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not minimum <= value <= maximum:  # NaN fails this too
        raise InvalidArgument(f"{name} must be between {minimum} and {maximum} s, got {value}")


def check_flag(name: str, value: object) -> None:
    """A yes/no option must be a bool: ``verbose=1`` or ``wake="false"`` is a mistake."""
    if not isinstance(value, bool):
        raise InvalidOptionType(f"{name} must be True or False, not {value!r}")


def check_consumer_options(
    handler: object,
    *,
    poll_interval_s: object,
    promote_interval_s: object,
    promote_batch: object,
    reap_interval_s: object,
    reap_batch: object,
    heartbeat_interval_s: object,
    verbose: object,
    logger: object,
    drain: object,
    stop_on_ctrl_c: object,
    max_jobs: object,
    concurrency: object,
    prefetch: object,
    ack_delay_s: object,
    wake: object,
    observer: object = None,
    tracebacks: object = True,
    burst: object = False,
) -> None:
    """Check a consumer's handler and options before it reserves anything: the wrong type
    raises :class:`InvalidOptionType` (a ``TypeError``), a value out of range
    :class:`InvalidArgument` (a ``ValueError``)."""
    if not callable(handler):
        raise InvalidOptionType(f"handler must be callable, not {type(handler).__name__}")
    for name, seconds in (
        ("poll_interval_s", poll_interval_s),
        ("promote_interval_s", promote_interval_s),
        ("reap_interval_s", reap_interval_s),
    ):
        _consumer_seconds(name, seconds, MIN_INTERVAL_S, MAX_INTERVAL_S)
    if heartbeat_interval_s is not None:
        _consumer_seconds("heartbeat_interval_s", heartbeat_interval_s, MIN_INTERVAL_S,
                          MAX_INTERVAL_S)  # fmt: skip
    _consumer_seconds("ack_delay_s", ack_delay_s, 0.0, MAX_ACK_DELAY_S)
    _consumer_int("promote_batch", promote_batch, 1, MAX_CONSUMER_BATCH)
    _consumer_int("reap_batch", reap_batch, 1, MAX_CONSUMER_BATCH)
    _consumer_int("concurrency", concurrency, 1, MAX_CONCURRENCY)
    if prefetch is not None:
        _consumer_int("prefetch", prefetch, 0, MAX_CONSUMER_BATCH)
    if max_jobs is not None:
        _consumer_int("max_jobs", max_jobs, 1, 2**63 - 1)
    for name, flag in (
        ("verbose", verbose), ("drain", drain), ("stop_on_ctrl_c", stop_on_ctrl_c), ("wake", wake),
        ("tracebacks", tracebacks), ("burst", burst),
    ):  # fmt: skip
        check_flag(name, flag)
    if observer is not None and not all(
        callable(getattr(observer, name, None)) for name in ("job_started", "job_finished")
    ):
        raise InvalidOptionType(
            f"observer must have job_started and job_finished methods, not {type(observer).__name__}"
        )
    if not (isinstance(logger, logging.Logger) or callable(logger)):
        raise InvalidOptionType(
            f"logger must be a callable or a logging.Logger, not {type(logger).__name__}"
        )
