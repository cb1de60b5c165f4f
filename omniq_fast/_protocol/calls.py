"""Every single-call operation as a :class:`Call`: the bytes to send and what the reply means.

A builder checks its arguments (nothing is written when one is bad), encodes the command and
returns it with the function that turns the reply into the method's result or typed error.
It sends nothing and reads no clock: ``now`` is an argument, so the blocking and the asyncio
shells (:class:`~omniq_fast.Client`, :class:`~omniq_fast.AsyncClient`) make the same
decision for the same call, and differ only in how they route, send and wait.

Operations that take more than one script call (the per-lease batches over 1000 leases)
are a :class:`Plan`: calls to run in order and how to join their results.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Generic, Iterable, Optional, Sequence, TypeVar, Union

from ..errors import (
    AdminError,
    DuplicateJob,
    InvalidArgument,
    ProtocolError,
    ReplyError,
    lease_error,
)
from ..keys import REMOVE_LANES, counter_anchor, job_key, paused_key, queue_anchor, wake_channel
from .._options import EnqueueOptions, check_id, check_int, enqueue_options
from .._scripts import Script, evalsha_head, script
from ..types import (
    AckFailResult, BatchResultItem, JobResult, Paused, ReservedJob, ReserveResult,
)  # fmt: skip

__all__ = [
    "Call", "Plan", "Lease", "MAX_BATCH", "MAX_SCRIPT_BATCH", "evalsha", "text",
    "wake_command", "checked_publish", "publish", "reserve", "heartbeat", "ack_success", "ack_fail",
    "promote_delayed", "reap_expired", "job_timeout_ms", "pause", "resume", "is_paused",
    "retry_failed", "retry_failed_batch", "remove_job", "remove_jobs_batch", "childs_init",
    "child_ack", "reserve_many", "per_lease", "release_many",
]  # fmt: skip

T = TypeVar("T")

#: Most ids ``retry_failed_batch`` / ``remove_jobs_batch`` take in one call (script limit).
MAX_BATCH = 100
#: Most jobs one batched script call takes (the scripts refuse more).
MAX_SCRIPT_BATCH = 1000

Lease = Union[ReservedJob, Sequence[str]]
Arg = Union[bytes, str, int]


class Call(Generic[T]):
    """One command to send and how to read its reply.

    ``script`` is the Lua script an EVALSHA runs (loaded and the call re-sent when the
    server answers NOSCRIPT: such a reply means nothing ran), or None for a plain command.
    ``anchor`` is the key that routes the call (its cluster slot). ``wake`` names a queue
    whose wake channel is notified in the same write, after the call. ``resend_safe``: a
    second run changes nothing more (reads), so the call may be sent again when its reply
    was lost. ``on_error`` turns an error reply into a result instead of raising it.

    A plain slotted class, not a dataclass: one is built per operation on the hot path
    (a frozen dataclass's ``__init__`` costs several times more).
    """

    __slots__ = ("script", "anchor", "data", "parse", "wake", "resend_safe", "on_error")

    def __init__(
        self,
        script: Optional[Script],
        anchor: str,
        data: bytes,
        parse: Callable[[Any], T],
        wake: Optional[str] = None,
        resend_safe: bool = False,
        on_error: Optional[Callable[[ReplyError], T]] = None,
    ) -> None:
        self.script = script
        self.anchor = anchor
        self.data = data
        self.parse = parse
        self.wake = wake
        self.resend_safe = resend_safe
        self.on_error = on_error

    def result(self, reply: Any) -> T:
        """The call's result for ``reply`` (an error reply raises, unless ``on_error``)."""
        if isinstance(reply, ReplyError):
            if self.on_error is not None:
                return self.on_error(reply)
            raise reply
        return self.parse(reply)


@dataclass(frozen=True)
class Plan(Generic[T]):
    """Calls run one after another (each answered before the next is sent) and the
    function joining their results, in order, into the operation's result."""

    calls: list[Call[Any]]
    join: Callable[[list[Any]], T]


def text(item: object) -> str:
    """A reply item as str (replies are read undecoded)."""
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return str(item)


def evalsha(core: ModuleType, s: Script, anchor: str, *argv: Arg) -> bytes:
    """``EVALSHA sha 1 anchor argv...``, encoded: every script declares one key, its anchor."""
    return core.encode_command(evalsha_head(s.sha, anchor) + argv)  # type: ignore[no-any-return]


def wake_command(core: ModuleType, queue: str, sharded: bool) -> bytes:
    """``PUBLISH {Q}:wake 1``: sent after queueing jobs, in the same write, so idle
    consumers pick them up at once. It changes no queue state. ``sharded``: ``SPUBLISH``,
    on a cluster whose servers have sharded pub/sub (the message then goes to the queue's
    own master only instead of to every node)."""
    verb = b"SPUBLISH" if sharded else b"PUBLISH"
    return core.encode_command((verb, wake_channel(queue), b"1"))  # type: ignore[no-any-return]


def _script_call(
    core: ModuleType, name: str, anchor: str, argv: Sequence[Arg], parse: Callable[[Any], T],
    wake: Optional[str] = None,
) -> Call[T]:  # fmt: skip
    s = script(name)
    return Call(s, anchor, evalsha(core, s, anchor, *argv), parse, wake)


def _status(op: str) -> Callable[[Any], list[Any]]:
    """The reply as a list whose first item is ``"OK"``; lease errors raise typed."""

    def parse(reply: Any) -> list[Any]:
        if isinstance(reply, list) and reply:
            head = text(reply[0])
            if head == "OK":
                return reply
            if head == "ERR" and len(reply) >= 2:
                raise lease_error(op, text(reply[1]))
        raise ProtocolError(f"unexpected {op} reply: {reply!r}")

    return parse


def _admin_status(op: str, reply: object) -> None:
    if isinstance(reply, list) and reply:
        head = text(reply[0])
        if head == "OK":
            return
        if head == "ERR" and len(reply) >= 2:
            raise AdminError(op, text(reply[1]))
    raise ProtocolError(f"unexpected {op} reply: {reply!r}")


def _int_at(op: str, index: int) -> Callable[[Any], int]:
    status = _status(op)

    def parse(reply: Any) -> int:
        ok = status(reply)
        try:
            return int(ok[index])
        except (IndexError, ValueError, TypeError):
            raise ProtocolError(f"unexpected {op} reply: {reply!r}") from None

    return parse


_ENQUEUE_STATUS = _status("ENQUEUE")


# ---------------------------------------------------------------------- producing


def checked_publish(
    core: ModuleType,
    queue: str,
    payload: Any,
    job_id: Optional[str],
    max_attempts: int,
    timeout_ms: int,
    backoff_ms: int,
    due_ms: int,
    gid: Optional[str],
    group_limit: int,
) -> tuple[str, bytes, str, EnqueueOptions]:
    """``publish``'s arguments checked in order (nothing is sent when one is bad): the
    queue's anchor, the encoded payload, the job's id (made now when none was given, so
    the caller knows it before anything is sent) and its options."""
    anchor = queue_anchor(queue)  # the name is checked first, like every other argument
    body = core.dumps_payload(payload)
    options = enqueue_options(max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit)
    if job_id is None or job_id == "":
        job_id = core.new_ulid()
    else:
        check_id("job_id", job_id)
    return anchor, body, job_id, options


def publish(
    core: ModuleType,
    queue: str,
    payload: Any,
    job_id: Optional[str],
    max_attempts: int,
    timeout_ms: int,
    backoff_ms: int,
    due_ms: int,
    gid: Optional[str],
    group_limit: int,
    now: int,
) -> Call[str]:
    """``enqueue`` of one job, its wake message in the same write; the result is its id."""
    anchor, body, the_id, options = checked_publish(
        core, queue, payload, job_id, max_attempts, timeout_ms, backoff_ms, due_ms, gid,
        group_limit,
    )  # fmt: skip
    attempts, timeout, backoff, due, group, limit = options

    def parse(reply: Any) -> str:
        if type(reply) is list and reply:
            head = reply[0]
            if head == b"OK":  # the usual reply, before the general reading of it
                return the_id
            if text(head) == "DUPLICATE":
                raise DuplicateJob(queue, the_id)
        _ENQUEUE_STATUS(reply)
        return the_id

    s = script("enqueue")
    # One tuple for the whole command (not evalsha's argv unpacked into another): every
    # publish builds it.
    data = core.encode_command((b"EVALSHA", s.sha, b"1", anchor, the_id, body, attempts,
                                timeout, backoff, now, due, group, limit))  # fmt: skip
    return Call(s, anchor, data, parse, queue)


# ---------------------------------------------------------------------- consuming


def reserve(core: ModuleType, queue: str, now: int) -> Call[ReserveResult]:
    """Lease the next job (``ReservedJob``, ``Paused`` or ``None``)."""
    return _script_call(core, "reserve", queue_anchor(queue), (now,), core.parse_reserve_reply)


def heartbeat(core: ModuleType, queue: str, job_id: str, lease_token: str, now: int) -> Call[int]:
    """Extend a lease; the new ``lock_until_ms``."""
    anchor = queue_anchor(queue)
    argv = (check_id("job_id", job_id), now, lease_token)
    return _script_call(core, "heartbeat", anchor, argv, _int_at("HEARTBEAT", 1))


def ack_success(
    core: ModuleType, queue: str, job_id: str, lease_token: str, now: int
) -> Call[None]:
    """Mark a leased job completed."""
    anchor = queue_anchor(queue)
    status = _status("ACK_SUCCESS")

    def parse(reply: Any) -> None:
        status(reply)

    argv = (check_id("job_id", job_id), now, lease_token)
    return _script_call(core, "ack_success", anchor, argv, parse)


def ack_fail(
    core: ModuleType, queue: str, job_id: str, lease_token: str, error: Optional[str], now: int
) -> Call[AckFailResult]:
    """Report a failed attempt: ``("RETRY", due_ms)`` or ``("FAILED", None)``."""
    anchor = queue_anchor(queue)
    argv: list[Arg] = [check_id("job_id", job_id), now, lease_token]
    if error:
        argv.append(str(error))
    status = _status("ACK_FAIL")

    def parse(reply: Any) -> AckFailResult:
        if isinstance(reply, list) and reply:
            head = text(reply[0])
            if head == "RETRY" and len(reply) >= 2:
                return ("RETRY", int(reply[1]))
            if head == "FAILED":
                return ("FAILED", None)
        status(reply)
        raise ProtocolError(f"unexpected ACK_FAIL reply: {reply!r}")

    return _script_call(core, "ack_fail", anchor, argv, parse)


def promote_delayed(core: ModuleType, queue: str, max_promote: int, now: int) -> Call[int]:
    """Move up to ``max_promote`` due delayed jobs to their lane; how many moved."""
    anchor = queue_anchor(queue)
    check_int("max_promote", max_promote, 1)
    argv = (now, max_promote)
    return _script_call(core, "promote_delayed", anchor, argv, _int_at("PROMOTE_DELAYED", 1))


def reap_expired(core: ModuleType, queue: str, max_reap: int, now: int) -> Call[int]:
    """Retry (or fail) up to ``max_reap`` jobs whose lease expired; how many."""
    anchor = queue_anchor(queue)
    check_int("max_reap", max_reap, 1)
    return _script_call(core, "reap_expired", anchor, (now, max_reap), _int_at("REAP_EXPIRED", 1))


def _int_or_zero(raw: Any) -> int:
    try:
        return int(raw) if raw else 0
    except ValueError:
        return 0


def job_timeout_ms(core: ModuleType, queue: str, job_id: str) -> Call[int]:
    """The job's ``timeout_ms`` (0 if the job or field is missing): a plain HGET."""
    key = job_key(queue, job_id)
    data = core.encode_command((b"HGET", key, b"timeout_ms"))
    return Call(None, key, data, _int_or_zero, resend_safe=True)


def pause(core: ModuleType, queue: str) -> Call[str]:
    """Stop handing out jobs; ``"OK"``."""
    return _script_call(core, "pause", queue_anchor(queue), (), text)


def resume(core: ModuleType, queue: str) -> Call[int]:
    """Hand out jobs again; 1 if the queue was paused, else 0."""
    return _script_call(core, "resume", queue_anchor(queue), (), int)


def is_paused(core: ModuleType, queue: str) -> Call[bool]:
    """Whether the queue is paused: a plain EXISTS."""
    key = paused_key(queue)
    return Call(None, key, core.encode_command((b"EXISTS", key)), bool, resend_safe=True)


# ---------------------------------------------------------------------- admin


def _parse_batch(op: str) -> Callable[[Any], list[BatchResultItem]]:
    """Flat ``id, "OK"`` / ``id, "ERR", reason`` triples into result items."""

    def parse(reply: Any) -> list[BatchResultItem]:
        if not isinstance(reply, list):
            raise ProtocolError(f"unexpected {op} reply: {reply!r}")
        if len(reply) >= 2 and text(reply[0]) == "ERR":
            raise AdminError(op, text(reply[1]))
        items: list[BatchResultItem] = []
        i = 0
        while i + 1 < len(reply):
            job_id, status = text(reply[i]), text(reply[i + 1])
            if status == "OK":
                items.append(BatchResultItem(job_id, "OK"))
                i += 2
            elif status == "ERR" and i + 2 < len(reply):
                items.append(BatchResultItem(job_id, "ERR", text(reply[i + 2])))
                i += 3
            else:
                raise ProtocolError(f"unexpected {op} reply: {reply!r}")
        if i != len(reply):
            raise ProtocolError(f"unexpected {op} reply: {reply!r}")
        return items

    return parse


def _check_lane(lane: object) -> None:
    if lane not in REMOVE_LANES:
        raise InvalidArgument(f"lane must be one of {sorted(REMOVE_LANES)}, got {lane!r}")


def _batch_ids(job_ids: Iterable[str]) -> list[str]:
    if isinstance(job_ids, (str, bytes)):
        raise InvalidArgument("job_ids must be a list of ids, not a single string")
    ids = list(job_ids)
    if len(ids) > MAX_BATCH:
        raise InvalidArgument(f"at most {MAX_BATCH} job_ids per call, got {len(ids)}")
    for job_id in ids:
        if not isinstance(job_id, str):
            raise InvalidArgument(f"job ids must be str, not {type(job_id).__name__}")
    return ids


def _admin(op: str) -> Callable[[Any], None]:
    def parse(reply: Any) -> None:
        _admin_status(op, reply)

    return parse


def retry_failed(core: ModuleType, queue: str, job_id: str, now: int) -> Call[None]:
    """Queue a failed job again with its attempts reset."""
    anchor = queue_anchor(queue)
    argv = (check_id("job_id", job_id), now)
    return _script_call(core, "retry_failed", anchor, argv, _admin("RETRY_FAILED"))


def retry_failed_batch(
    core: ModuleType, queue: str, job_ids: Sequence[str], now: int
) -> Optional[Call[list[BatchResultItem]]]:
    """:func:`retry_failed` for up to 100 ids; None when there are none (nothing to send)."""
    anchor = queue_anchor(queue)
    ids = _batch_ids(job_ids)
    if not ids:
        return None
    argv: list[Arg] = [now, len(ids), *ids]
    return _script_call(core, "retry_failed_batch", anchor, argv, _parse_batch("RETRY_FAILED_BATCH"))


def remove_job(core: ModuleType, queue: str, job_id: str, lane: str) -> Call[str]:
    """Delete a job that is not running from ``lane``; ``"OK"``."""
    anchor = queue_anchor(queue)
    _check_lane(lane)
    admin = _admin("REMOVE_JOB")

    def parse(reply: Any) -> str:
        admin(reply)
        return "OK"

    return _script_call(core, "remove_job", anchor, (check_id("job_id", job_id), lane), parse)


def remove_jobs_batch(
    core: ModuleType, queue: str, lane: str, job_ids: Sequence[str]
) -> Optional[Call[list[BatchResultItem]]]:
    """:func:`remove_job` for up to 100 ids; None when there are none."""
    anchor = queue_anchor(queue)
    _check_lane(lane)
    ids = _batch_ids(job_ids)
    if not ids:
        return None
    # No trailing now_ms, like the official SDK: the keyspace stays identical.
    argv: list[Arg] = [lane, len(ids), *ids]
    return _script_call(core, "remove_jobs_batch", anchor, argv, _parse_batch("REMOVE_JOBS_BATCH"))


# ---------------------------------------------------------------------- fan-out counters


def childs_init(core: ModuleType, key: str, expected: int) -> Call[None]:
    """Start completion counter ``key`` expecting ``expected`` children."""
    anchor = counter_anchor(key)
    check_int("expected", expected, 1)
    return _script_call(core, "childs_init", anchor, (expected,), _admin("CHILDS_INIT"))


def _remaining(reply: Any) -> int:
    try:
        if isinstance(reply, list) and len(reply) >= 2 and text(reply[0]) == "OK":
            return int(reply[1])
    except ValueError:
        pass
    return -1


def _minus_one(_: ReplyError) -> int:
    return -1


def child_ack(core: ModuleType, key: str, child_id: str) -> Call[int]:
    """Count child ``child_id`` as done; how many remain, -1 for any server-side error
    (never raised, so a retried child cannot trigger the completion twice)."""
    anchor = counter_anchor(key)
    check_id("child_id", child_id)
    s = script("child_ack")
    data = evalsha(core, s, anchor, child_id)
    return Call(s, anchor, data, _remaining, on_error=_minus_one)


# ---------------------------------------------------------------------- many jobs per call


def _check_batch_size(name: str, n: int) -> None:
    check_int(name, n, 1)
    if n > MAX_SCRIPT_BATCH:
        raise InvalidArgument(f"{name} must be <= {MAX_SCRIPT_BATCH}")


def reserve_many(
    core: ModuleType, queue: str, n: int, now: int
) -> Call[Union[list[ReservedJob], Paused]]:
    """Lease up to ``n`` jobs in one call."""
    anchor = queue_anchor(queue)
    _check_batch_size("n", n)
    return _script_call(core, "reserve_batch", anchor, (now, n), core.parse_reserve_batch_reply)


def _lease_call(
    core: ModuleType,
    name: str,
    anchor: str,
    leases: Sequence[Lease],
    errors: Optional[Sequence[Optional[str]]],
    now: int,
    width: int,
) -> Call[list[JobResult]]:
    s = script(name)
    data, ids = core.encode_lease_batch(s.sha, anchor, now, leases, errors)

    def parse(reply: Any) -> list[JobResult]:
        return core.parse_job_results(reply, ids, width)  # type: ignore[no-any-return]

    return Call(s, anchor, data, parse)


def _concat(parts: list[list[JobResult]]) -> list[JobResult]:
    return [result for part in parts for result in part]


def per_lease(
    core: ModuleType,
    name: str,
    queue: str,
    leases: Sequence[Lease],
    errors: Optional[Sequence[Optional[str]]],
    now: int,
    width: int,
) -> Plan[list[JobResult]]:
    """Per-lease batch script ``name`` (``ack_success_batch``, ``ack_fail_batch``,
    ``heartbeat_batch``) over ``leases``, 1000 per call; one result per lease."""
    anchor = queue_anchor(queue)
    if errors is not None and len(errors) != len(leases):
        raise InvalidArgument("errors must have one entry per lease")
    calls: list[Call[Any]] = []
    for start in range(0, len(leases), MAX_SCRIPT_BATCH):
        end = start + MAX_SCRIPT_BATCH
        chunk_errors = None if errors is None else errors[start:end]
        calls.append(_lease_call(core, name, anchor, leases[start:end], chunk_errors, now, width))
    return Plan(calls, _concat)


def release_many(
    core: ModuleType, queue: str, leases: Sequence[Lease], now: int
) -> Plan[list[JobResult]]:
    """``release_batch`` over ``leases``. Each call pushes its jobs onto the heads of their
    lanes, so the calls go from the last 1000 leases to the first, all at one now."""
    anchor = queue_anchor(queue)
    starts = list(range(0, len(leases), MAX_SCRIPT_BATCH))
    calls: list[Call[Any]] = [
        _lease_call(core, "release_batch", anchor, leases[s : s + MAX_SCRIPT_BATCH], None, now, 1)
        for s in reversed(starts)
    ]

    def join(parts: list[list[JobResult]]) -> list[JobResult]:
        return _concat(parts[::-1])

    return Plan(calls, join)
