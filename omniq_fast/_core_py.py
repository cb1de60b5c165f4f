"""Pure-Python twin of ``omniq_fast._core``: the hot functions of the client.

Turns arguments into bytes and bytes into results, nothing else: no sockets, no threads.
``_compat`` picks this module or the compiled one; both export the same names with the same
signatures, defined in the same order so the two files read side by side.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Iterable, Optional, Sequence, Union

import orjson

from .errors import InvalidPayload, InvalidPayloadValue, ProtocolError
from .types import Paused, ReservedJob

__all__ = [
    "encode_command",
    "encode_commands",
    "dumps_payload",
    "loads_payload",
    "new_ulid",
    "parse_reserve_reply",
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


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings, ready to write to the socket."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _arg_bytes(arg)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


def encode_commands(commands: Iterable[Sequence[Arg]]) -> bytes:
    """Several commands back to back: one write for a pipelined batch."""
    return b"".join([encode_command(args) for args in commands])


# --------------------------------------------------------------------------- payloads

# orjson bypasses ``default`` for these unless told to pass them through; the official SDK
# (stdlib json) refuses them, so we do too instead of inventing an encoding other SDKs
# would not produce.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

# orjson writes NaN/Infinity as null, and formats floats below 1e-4 differently from
# Python's repr ("1.5e-7" vs "1.5e-07", "0.00001" vs "1e-05"). These byte patterns are the
# only ways such output can appear, so their absence proves the fast result is exact; their
# presence (mostly in strings, which is rare) sends us to the stdlib for the exact answer.
_SLOW_MARKERS = (b"null", b"e-", b"0.0000")


def _to_structured(payload: Any) -> Any:
    if isinstance(payload, (dict, list)):
        return payload
    if hasattr(payload, "__dataclass_fields__") and not isinstance(payload, type):
        import dataclasses

        return dataclasses.asdict(payload)
    model_dump = getattr(payload, "model_dump", None)
    if callable(model_dump) and not isinstance(payload, type):
        return model_dump(mode="json")
    raise InvalidPayload(
        f"payload must be a dict or list (structured JSON), not {type(payload).__name__}; "
        "wrap scalars, e.g. {'value': ...}"
    )


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
            raise InvalidPayload(f"payload is not JSON-serialisable: {exc}") from None
    else:
        if not any(marker in out for marker in _SLOW_MARKERS):
            return out
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise InvalidPayloadValue(f"payload is not valid JSON: {exc}") from None
    except TypeError as exc:
        raise InvalidPayload(f"payload is not JSON-serialisable: {exc}") from None
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
        return item.decode("utf-8")
    if isinstance(item, str):
        return item
    if isinstance(item, int):
        return str(item)
    raise ProtocolError(f"expected a string in the reply, got {type(item).__name__}")


def _int(item: object) -> int:
    try:
        return int(item)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
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
