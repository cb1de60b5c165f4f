"""Pure-Python twin of ``omniq_fast._core``: the hot functions of the client.

Turns arguments into bytes and bytes into results, nothing else: no sockets, no threads.
``_compat`` picks this module or the compiled one; both export the same names with the same
signatures, defined in the same order so the two files read side by side.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import orjson

from .errors import InvalidArgument, InvalidPayload, InvalidPayloadValue, ProtocolError, reply_error
from ._options import EnqueueOptions, check_id, job_options
from ._scripts import evalsha_head
from .types import Job, JobResult, MalformedJob, Paused, ReservedJob

__all__ = [
    "encode_command",
    "encode_commands",
    "encode_args",
    "dumps_payload",
    "loads_payload",
    "new_ulid",
    "parse_reserve_reply",
    "parse_reserve_batch_reply",
    "encode_enqueue_batch",
    "encode_lease_batch",
    "parse_job_results",
    "PushNotification",
    "ReplyParser",
]

Arg = Union[bytes, str, int]

# --------------------------------------------------------------------------- RESP encoding


def _arg_bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8")
    # bool is an int subclass; reject it rather than send "True".
    if isinstance(arg, int) and not isinstance(arg, bool):
        return str(arg).encode("ascii")
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    raise TypeError(f"cannot encode {type(arg).__name__} as a Redis argument")


def _append_bulk(parts: List[bytes], arg: Arg) -> None:
    data = _arg_bytes(arg)
    parts += (b"$%d\r\n" % len(data), data, b"\r\n")


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings, ready to write to the socket."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        _append_bulk(parts, arg)
    return b"".join(parts)


def encode_commands(commands: Iterable[Sequence[Arg]]) -> bytes:
    """Several commands back to back: one write for a pipelined batch."""
    return b"".join([encode_command(args) for args in commands])


def encode_args(args: Sequence[Arg]) -> bytes:
    """Arguments as RESP bulk strings without the array header: a piece of a command whose
    length is counted elsewhere (a coalesced publish's part of an ``enqueue_batch``)."""
    parts: List[bytes] = []
    for arg in args:
        _append_bulk(parts, arg)
    return b"".join(parts)


# --------------------------------------------------------------------------- payloads

# orjson bypasses ``default`` for these unless told to pass them through; the official SDK
# (stdlib json) refuses them, so we do too instead of inventing an encoding other SDKs
# would not produce.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

# orjson formats floats below 1e-4 differently from Python's repr ("1.5e-7" vs "1.5e-07",
# "0.00001" vs "1e-05"). These byte patterns are the only ways such output can appear, so
# their absence proves the fast result is exact; their presence (mostly in strings, which is
# rare) sends us to the stdlib for the exact answer.
_FLOAT_MARKERS = (b"e-", b"0.0000")
# orjson also writes what the stdlib refuses: NaN/Infinity (as null), a UUID (as a string),
# an Enum (as its value). Reading the output back tells them apart from plain data, in C:
# each comes back unequal to what was written (None for NaN, a str for a UUID) and so goes
# to the stdlib, which refuses it with the official SDK's rule; data that comes back equal
# was plain JSON data (a None included), which both write alike. Checking only when the
# output holds a null would accept a UUID in one payload and refuse it in the next.


def _to_structured(payload: Any) -> Any:
    if isinstance(payload, (dict, list)):
        return payload
    if hasattr(payload, "__dataclass_fields__") and not isinstance(payload, type):
        import dataclasses

        return dataclasses.asdict(payload)
    model_dump = getattr(payload, "model_dump", None)
    if callable(model_dump) and not isinstance(payload, type):
        # Plain Python data, then the one rule every payload follows: a datetime (or any
        # value JSON has no type for) is refused wherever it sits, as it is in a dict.
        return model_dump()
    raise InvalidPayload(
        f"payload must be a dict or list (structured JSON), not {type(payload).__name__}; "
        "wrap scalars, e.g. {'value': ...}"
    )


_JSON_SCALARS = (str, int, float, bool, type(None))


def _unencodable_at(data: Any) -> str:
    """Where the first value JSON has no type for sits in ``data`` (``$.a[2].b``), and its
    type, for the error message; ``""`` if every value is plain JSON data."""
    todo: List[Tuple[str, Any]] = [("$", data)]
    while todo:
        path, value = todo.pop()
        if isinstance(value, dict):
            todo.extend((f"{path}.{key}", item) for key, item in reversed(list(value.items())))
        elif isinstance(value, (list, tuple)):
            todo.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        elif not isinstance(value, _JSON_SCALARS):
            return f"{path} is a {type(value).__name__}"
    return ""


def _not_serialisable(data: Any, exc: Exception) -> InvalidPayload:
    where = _unencodable_at(data)
    if where:
        return InvalidPayload(
            f"payload is not JSON-serialisable: {where}, which JSON has no type for; "
            "convert it first (e.g. .isoformat(), or model.model_dump(mode='json'))"
        )
    return InvalidPayload(f"payload is not JSON-serialisable: {exc}")


def dumps_payload(payload: Any) -> bytes:
    """Compact UTF-8 JSON of a dict/list payload, byte-identical to the official encoding.

    Raises :class:`InvalidPayload` for anything that is not structured JSON data and
    :class:`InvalidPayloadValue` for NaN/Infinity (the official SDK writes them as bare
    ``NaN``, which is not JSON and which other SDKs cannot parse).
    """
    data = _to_structured(payload)
    try:
        out = orjson.dumps(data, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):  # big ints are valid JSON: let the stdlib write them
            raise _not_serialisable(data, exc) from None
    else:
        if not any(marker in out for marker in _FLOAT_MARKERS) and orjson.loads(out) == data:
            return out
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise InvalidPayloadValue(f"payload is not valid JSON: {exc}") from None
    except TypeError as exc:
        raise _not_serialisable(data, exc) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidPayload(f"payload has a string that is not valid UTF-8: {exc}") from None


def loads_payload(raw: str) -> Any:
    """The handler's ``ctx.payload``: parsed JSON, or the raw text if it is not JSON
    (another SDK may have written something we would have refused)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


# --------------------------------------------------------------------------- ULIDs

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ulid_lock = threading.Lock()
_ulid_last_ms = -1
_ulid_last_rand = 0


def new_ulid() -> str:
    """A 26-character ULID, monotonic within one millisecond in this process."""
    global _ulid_last_ms, _ulid_last_rand
    ms = time.time_ns() // 1_000_000
    with _ulid_lock:
        if ms <= _ulid_last_ms:
            # Same (or a stepped-back) millisecond: keep the old time and count up, so ids
            # made in one process always sort in creation order.
            ms = _ulid_last_ms
            rand = _ulid_last_rand + 1
            if rand >> 80:
                ms += 1
                rand = int.from_bytes(os.urandom(10), "big")
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _ulid_last_ms = ms
        _ulid_last_rand = rand
    value = (ms << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


# --------------------------------------------------------------------------- replies


def _text(item: object) -> str:
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            # A reply's bytes are whatever a job hash holds: bad text is the server's
            # answer, not a bug here, and callers handle one error type for bad replies.
            raise ProtocolError(f"expected UTF-8 text in the reply, got {item[:40]!r}") from None
    if isinstance(item, str):
        return item
    if isinstance(item, int):
        return str(item)
    raise ProtocolError(f"expected a string in the reply, got {type(item).__name__}")


def _int(item: object) -> int:
    try:
        return int(item)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError, OverflowError):  # OverflowError: a RESP3 double of inf
        raise ProtocolError(f"expected an integer in the reply, got {item!r}") from None


def parse_reserve_reply(reply: object) -> Optional[Union[ReservedJob, Paused]]:
    """``reserve``'s reply as ``ReservedJob``, ``Paused`` or ``None`` (empty queue)."""
    if not isinstance(reply, list) or not reply:
        raise ProtocolError(f"unexpected reserve reply: {reply!r}")
    status = reply[0]
    if status == b"EMPTY" or status == "EMPTY":
        return None
    if status == b"PAUSED" or status == "PAUSED":
        return Paused()
    if (status == b"JOB" or status == "JOB") and len(reply) >= 8:
        return ReservedJob(
            status="JOB",
            job_id=_text(reply[1]),
            payload=_text(reply[2]),
            lock_until_ms=_int(reply[3]),
            attempt=_int(reply[4]),
            max_attempts=_int(reply[5]),
            gid=_text(reply[6]),
            lease_token=_text(reply[7]),
        )
    raise ProtocolError(f"unexpected reserve reply: {reply!r}")


def parse_reserve_batch_reply(reply: object) -> Union[List[ReservedJob], Paused]:
    """``reserve_batch``'s reply: the leased jobs in order (``[]`` when none), or ``Paused``."""
    if not isinstance(reply, list) or not reply:
        raise ProtocolError(f"unexpected reserve_batch reply: {reply!r}")
    status = reply[0]
    if status == b"EMPTY" or status == "EMPTY":
        return []
    if status == b"PAUSED" or status == "PAUSED":
        return Paused()
    if (status == b"JOB" or status == "JOB") and len(reply) >= 2:
        count = _int(reply[1])
        if count >= 0 and len(reply) == 2 + 7 * count:
            return [_reserved_job(reply, i) for i in range(2, len(reply), 7)]
    raise ProtocolError(f"unexpected reserve_batch reply: {reply!r}")


def _reserved_job(reply: List[Any], i: int) -> ReservedJob:
    """The job at ``reply[i:i + 7]``: a :class:`MalformedJob` when its fields do not read,
    so that one bad job hash costs its own job, not the batch (whose leases are real)."""
    try:
        payload = _text(reply[i + 1])
        job = ReservedJob(
            status="JOB",
            job_id=_text(reply[i]),
            payload=payload,
            lock_until_ms=_int(reply[i + 2]),
            attempt=_int(reply[i + 3]),
            max_attempts=_int(reply[i + 4]),
            gid=_text(reply[i + 5]),
            lease_token=_text(reply[i + 6]),
        )
    except ProtocolError:
        return _malformed_job(reply[i : i + 7])
    if not payload:
        return _malformed_job(reply[i : i + 7])
    return job


#: The job hash field behind each of a reserved job's reply fields (the lease deadline is
#: now + timeout_ms), named in a :class:`MalformedJob`'s problem.
_RESERVED_FIELDS = ("job id", "payload", "timeout_ms", "attempt", "max_attempts", "gid",
                    "lease_token")  # fmt: skip


def _loose_text(item: object) -> Tuple[Optional[str], bool]:
    """``item`` as text and whether it read cleanly: bad UTF-8 comes back escaped (and
    False), an item that is not text at all as ``None``."""
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8"), True
        except UnicodeDecodeError:
            return item.decode("utf-8", "backslashreplace"), False
    if isinstance(item, str):
        return item, True
    if isinstance(item, int):
        return str(item), True
    return None, False


def _malformed_job(items: List[Any]) -> MalformedJob:
    """What can be read of a job's reply fields, stand-ins for the rest, and why."""
    problems: List[str] = []
    values: List[Any] = []
    for k, item in enumerate(items):
        name = _RESERVED_FIELDS[k]
        text, clean = _loose_text(item)
        if k == 2 or k == 3 or k == 4:
            try:
                values.append(_int(item))
                continue
            except ProtocolError:
                values.append(0)
            shown = repr(text[:40]) if text is not None else type(item).__name__
            if k == 2:
                problems.append(f"timeout_ms is out of range: the lease deadline reads {shown}")
            else:
                problems.append(f"{name} is not an integer: {shown}")
        elif text is None:
            values.append("")
            problems.append(f"{name} is not text: {type(item).__name__}")
        else:
            values.append(text)
            if not clean:
                problems.append(f"{name} is not valid UTF-8")
            elif k == 1 and not text:
                problems.append("payload is missing (the job hash or its payload was deleted)")
    job_id, payload, lock_until_ms, attempt, max_attempts, gid, lease_token = values
    return MalformedJob("JOB", job_id, payload, lock_until_ms, attempt, max_attempts, gid,
                        lease_token, "; ".join(problems))


# --------------------------------------------------------------------------- batches


def encode_enqueue_batch(
    sha: bytes, anchor: str, now_ms: int, items: Sequence[Any], defaults: EnqueueOptions
) -> Tuple[bytes, List[str]]:
    """One EVALSHA of ``enqueue_batch`` for ``items`` and the ids they get, in order.

    Items are payloads (taking ``defaults``) or :class:`~omniq_fast.types.Job` objects
    (their own options over ``defaults``); every item is checked and encoded before the
    command exists, so a bad item means nothing of the batch is sent.
    """
    n = len(items)
    # Written in order as it is checked (a bad header argument fails before a bad item),
    # the defaults' six arguments encoded once for every plain payload.
    parts = [b"*%d\r\n" % (6 + 8 * n)]
    for arg in evalsha_head(sha, anchor) + (now_ms, n):
        _append_bulk(parts, arg)
    shared: List[bytes] = []
    for arg in defaults:
        _append_bulk(shared, arg)
    shared_bytes = b"".join(shared)
    ids: List[str] = []
    for item in items:
        if isinstance(item, Job):
            opts = job_options(item, defaults)
            body = dumps_payload(item.payload)
            job_id = check_id("job_id", item.job_id) if item.job_id else new_ulid()
            _append_bulk(parts, job_id)
            _append_bulk(parts, body)
            for arg in opts:
                _append_bulk(parts, arg)
        else:
            body = dumps_payload(item)
            job_id = new_ulid()
            _append_bulk(parts, job_id)
            _append_bulk(parts, body)
            parts.append(shared_bytes)
        ids.append(job_id)
    return b"".join(parts), ids


def _lease_fields(lease: Any) -> Tuple[str, str]:
    if isinstance(lease, ReservedJob):
        return lease.job_id, lease.lease_token
    try:
        job_id, token = lease[0], lease[1]
    except (TypeError, IndexError, KeyError):
        job_id = token = None
    if not isinstance(job_id, str) or not isinstance(token, str):
        raise InvalidArgument(f"a lease is a ReservedJob or (job_id, lease_token), not {lease!r}")
    return job_id, token


def encode_lease_batch(
    sha: bytes,
    anchor: str,
    now_ms: int,
    leases: Sequence[Any],
    errors: Optional[Sequence[Optional[str]]],
) -> Tuple[bytes, List[str]]:
    """One EVALSHA of a per-lease batch script (``ack_success_batch``, ``heartbeat_batch``,
    or ``ack_fail_batch`` when ``errors`` gives each lease's error text) and the job ids.

    A lease is a :class:`~omniq_fast.types.ReservedJob` or a ``(job_id, lease_token)`` pair.
    """
    n = len(leases)
    parts = [b"*%d\r\n" % (6 + (2 if errors is None else 3) * n)]
    for arg in evalsha_head(sha, anchor) + (now_ms, n):
        _append_bulk(parts, arg)
    ids: List[str] = []
    for i, lease in enumerate(leases):
        job_id, token = _lease_fields(lease)
        _append_bulk(parts, job_id)
        _append_bulk(parts, token)
        if errors is not None:
            _append_bulk(parts, errors[i] or "")
        ids.append(job_id)
    return b"".join(parts), ids


def _ms(item: object) -> Optional[int]:
    """A time in a per-lease reply, or ``None`` when the job's own (hand-edited) timeout_ms
    or backoff_ms made it a number that is not an integer ("1e+20", "inf"): the outcome
    stands, only the time is unknown, and one bad job must not fail the whole batch."""
    try:
        return _int(item)
    except ProtocolError:
        return None


def parse_job_results(reply: object, job_ids: Sequence[str], width: int) -> List[JobResult]:
    """A per-lease batch reply: ``width`` fields per job (``[status]`` for acks, which
    answer a refused job with the bare reason; ``[status, value]`` for the others)."""
    if not isinstance(reply, list) or len(reply) != width * len(job_ids):
        raise ProtocolError(f"unexpected batch reply: {reply!r}")
    results: List[JobResult] = []
    for i, job_id in enumerate(job_ids):
        status = _text(reply[i * width])
        # The value stays raw until its status says what it is (a time, or a reason).
        value = reply[i * width + 1] if width > 1 else b""
        if status == "OK":
            results.append(JobResult(job_id, "OK", _ms(value) if value else None))
        elif status == "RETRY":
            results.append(JobResult(job_id, "RETRY", _ms(value)))
        elif status == "FAILED":
            results.append(JobResult(job_id, "FAILED"))
        elif status == "ERR":
            results.append(JobResult(job_id, "ERR", None, _text(value)))
        else:
            results.append(JobResult(job_id, "ERR", None, status))
    return results


# --------------------------------------------------------------------------- reply parsing


class PushNotification(List[Any]):
    """A RESP3 push message (``>``): out-of-band data such as a pub/sub message, told apart
    from command replies by its type, as ``hiredis.PushNotification`` is."""


# What a reply may declare, checked as soon as its header line arrives, so a corrupt or
# hostile stream fails at once instead of making us buffer or allocate without bound.
_MAX_BULK = 512 * 1024 * 1024  # Redis' default proto-max-bulk-len
_MAX_ELEMENTS = 2**32 - 1  # hiredis' REDIS_READER_MAX_ARRAY_ELEMENTS
# Redis' deepest replies (XINFO STREAM FULL) nest about six containers. hiredis stops at
# 1024, but a reply that deep already breaks repr() and == on it (the recursion limit).
_MAX_DEPTH = 64

_AGGREGATES = b"*%~>|"  # array, map, set, push, attribute
_PAIRED = b"%|"  # maps and attributes declare pairs, not elements
_MAP, _PUSH = b"%>"
_BULK, _VERBATIM, _INTEGER, _DOUBLE, _NULL, _BOOLEAN, _STATUS, _ERROR = b"$=:,_#+-"

# The longest line each type can carry before its CRLF: a 64-bit integer's digits, hiredis'
# limit on a double's text; status, error and big-number lines get the bulk limit.
_LINE_LIMITS = {kind: 20 for kind in b"*%~>|$=:"}
_LINE_LIMITS.update({_DOUBLE: 325, _NULL: 0, _BOOLEAN: 1})
_LINE_LIMITS.update({kind: _MAX_BULK for kind in b"(+-"})

_INCOMPLETE = object()
# hiredis' string2ll: no sign but "-", no leading zeros, no "-0", no spaces.
_INTEGER_TEXT = re.compile(rb"0|-?[1-9][0-9]*")
# What strtod accepts minus hex, whitespace and "+"; the value is checked separately.
_DOUBLE_TEXT = re.compile(rb"(-?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(?:[eE][-+]?[0-9]+)?")
# A new float per reply, as hiredis makes: one shared NaN would be a single dict key.
_DOUBLE_WORDS = {b"inf": "inf", b"-inf": "-inf", b"nan": "nan", b"-nan": "nan"}
_BIG_NUMBER_TEXT = re.compile(rb"-?[0-9]*")


def _integer(line: bytes, what: str) -> int:
    if _INTEGER_TEXT.fullmatch(line) is None:
        raise ProtocolError(f"bad {what}: {line[:40]!r}")
    value = int(line)
    if not -(2**63) <= value < 2**63:
        raise ProtocolError(f"bad {what}: {line[:40]!r}")
    return value


def _length(line: bytes, what: str, limit: int) -> int:
    value = _integer(line, what)
    if value < -1 or value > limit:
        raise ProtocolError(f"{what} out of range: {value}")
    return value


def _double(line: bytes) -> float:
    word = _DOUBLE_WORDS.get(line.lower())
    if word is not None:
        return float(word)
    match = _DOUBLE_TEXT.fullmatch(line)
    if match is None:
        raise ProtocolError(f"bad double: {line[:40]!r}")
    value = float(line)
    # hiredis refuses what strtod overflows to infinity or underflows to zero.
    if math.isinf(value) or (value == 0.0 and match.group(1).strip(b"-.0")):
        raise ProtocolError(f"double out of range: {line[:40]!r}")
    return value


def _close(kind: int, items: List[Any]) -> Any:
    """The finished container. Maps are collected flat and built here (their keys are
    scalars, hence hashable: a container key fails when its header arrives, as in hiredis)."""
    if kind == _MAP:
        # hiredis' way, step for step: each key goes in with a None placeholder, then the
        # entry inserted last takes the value. That is dict(pairs) unless a key repeats
        # (Redis never sends one twice); then hiredis leaves None on the repeated key and
        # moves the value to the previous one, and so do we: same answers, always.
        pairs: dict[Any, Any] = {}
        for i in range(0, len(items), 2):
            pairs[items[i]] = None
            last, _ = pairs.popitem()
            pairs[last] = items[i + 1]
        return pairs
    if kind == _PUSH:
        return PushNotification(items)
    return items


class ReplyParser:
    """Incremental RESP2/RESP3 reply parser with ``hiredis.Reader``'s interface.

    ``feed`` bytes as they arrive from the socket, then call ``gets`` until it returns
    ``False`` (the next reply has not fully arrived). Replies come back as hiredis gives
    them: bulk and status strings as bytes, integers as int, nil and RESP3 null as None,
    arrays, sets and attributes as lists, maps as dicts, pushes as
    :class:`PushNotification`, doubles as float, booleans as bool, big numbers as their
    digits (bytes), verbatim strings without their format prefix, and error replies as
    :class:`ReplyError` instances, returned rather than raised. A RESP3 false is ``False``
    too, which hiredis does not tell apart from "incomplete" either.

    Malformed input raises :class:`ProtocolError`, on that call and every later one: the
    stream cannot be resynchronised. A reply arriving in many small pieces is parsed
    once: finished elements are kept between calls, not re-read.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the first element not parsed yet
        self._scanned = 0  # how much of that element's first line has no CRLF
        self._kinds: List[int] = []  # the open containers, outermost first
        self._remaining: List[int] = []  # elements each still needs
        self._items: List[List[Any]] = []  # and those it has
        self._error: Optional[str] = None
        self._busy = False  # inside gets(): see _check_idle

    def feed(self, data: bytes) -> None:
        """Append bytes received from the server."""
        self._check_idle()
        if self._error is None:
            self._buf += data

    def gets(self) -> Any:
        """The next complete reply, or ``False`` while it has not fully arrived."""
        self._check_idle()
        if self._error is not None:
            raise ProtocolError(self._error)
        self._busy = True
        try:
            reply = self._parse()
        except ProtocolError as exc:
            self._error = str(exc)
            self._buf = bytearray()
            raise
        finally:
            self._busy = False
        if self._pos == len(self._buf):
            self._buf = bytearray()  # drop the storage of a big reply once it is consumed
        elif self._pos:
            del self._buf[: self._pos]  # CPython drops a bytearray's head without copying
        self._pos = 0
        return False if reply is _INCOMPLETE else reply

    def _check_idle(self) -> None:
        # A parser belongs to one connection and one thread at a time. Another thread (or a
        # garbage-collector callback) calling in while gets() runs would corrupt the state
        # (in the compiled twin, free the buffer under it), so both twins refuse it.
        if self._busy:
            raise RuntimeError("ReplyParser used while gets() is running (another thread?)")

    def _parse(self) -> Any:
        buf = self._buf
        while True:
            start = self._pos
            if start >= len(buf):
                return _INCOMPLETE
            kind = buf[start]
            limit = _LINE_LIMITS.get(kind)
            if limit is None:
                raise ProtocolError(f"unknown reply type byte {bytes([kind])!r}")
            end = buf.find(b"\r\n", start + 1 + self._scanned)
            if end < 0:
                unterminated = len(buf) - start - 1
                # Too long already if the CRLF cannot start within the limit any more.
                cr_at_limit = buf.startswith(b"\r", start + 1 + limit)
                if unterminated > limit + 1 or (unterminated > limit and not cr_at_limit):
                    raise ProtocolError(f"reply line longer than {limit} bytes")
                # Resume the search where it stopped, keeping a trailing "\r" in view.
                self._scanned = max(unterminated - 1, 0)
                return _INCOMPLETE
            self._scanned = 0
            if end - start - 1 > limit:
                raise ProtocolError(f"reply line longer than {limit} bytes")
            line = bytes(buf[start + 1 : end])
            after = end + 2
            if kind in _AGGREGATES:
                count = _length(line, "aggregate length", _MAX_ELEMENTS)
                if self._kinds and self._kinds[-1] == _MAP and not self._remaining[-1] % 2:
                    if count >= 0:  # hiredis fails here too, with a TypeError
                        raise ProtocolError("a map key cannot be a container")
                if count < 0:
                    value: Any = None
                elif len(self._kinds) >= _MAX_DEPTH:
                    raise ProtocolError(f"reply nests deeper than {_MAX_DEPTH} containers")
                elif count == 0:
                    value = _close(kind, [])
                else:
                    # Attributes come back as a flat list of pairs, in place, like hiredis.
                    self._kinds.append(kind)
                    self._remaining.append(count * 2 if kind in _PAIRED else count)
                    self._items.append([])
                    self._pos = after
                    continue
            elif kind == _BULK or kind == _VERBATIM:
                size = _length(line, "bulk length", _MAX_BULK)
                if size < 0:
                    value = None
                else:
                    if len(buf) < after + size + 2:
                        return _INCOMPLETE
                    if buf[after + size : after + size + 2] != b"\r\n":
                        raise ProtocolError("bulk string not terminated by CRLF")
                    value = bytes(buf[after : after + size])
                    after += size + 2
                    if kind == _VERBATIM:
                        if size < 4 or value[3:4] != b":":
                            raise ProtocolError("verbatim string without its format prefix")
                        value = value[4:]
            elif kind == _INTEGER:
                value = _integer(line, "integer")
            elif kind == _STATUS or kind == _ERROR:
                if b"\r" in line or b"\n" in line:
                    raise ProtocolError("CR or LF inside a status or error line")
                value = line if kind == _STATUS else reply_error(line.decode("utf-8", "replace"))
            elif kind == _DOUBLE:
                value = _double(line)
            elif kind == _NULL:
                value = None
            elif kind == _BOOLEAN:
                if line not in (b"t", b"T", b"f", b"F"):
                    raise ProtocolError(f"bad boolean: {line!r}")
                value = line in (b"t", b"T")
            else:  # "(": a big number
                if _BIG_NUMBER_TEXT.fullmatch(line) is None:
                    raise ProtocolError(f"bad big number: {line[:40]!r}")
                value = line
            self._pos = after
            # Hand the value to its container, closing every container it completes.
            while self._kinds:
                self._items[-1].append(value)
                self._remaining[-1] -= 1
                if self._remaining[-1]:
                    break
                self._remaining.pop()
                value = _close(self._kinds.pop(), self._items.pop())
            else:
                return value
