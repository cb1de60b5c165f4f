# cython: language_level=3, embedsignature=True, binding=True, annotation_typing=False
# cython: freethreading_compatible=True
"""Compiled twin of ``omniq_fast._core_py``: the hot functions of the client, in Cython.

Same public names, same signatures, same behaviour and same order of definitions as the
pure twin, which is the reference: the comments there say why each rule exists and are not
repeated here; the ones here say how the C version keeps to it. ``annotation_typing`` is
off because the annotations are the twin's own text (``inspect.signature`` must match);
the C types are declared with ``cdef``. ``boundscheck``/``wraparound`` stay on: the hot
loops walk raw ``char`` pointers, which those directives never check, with every bound
tested by hand, and the few Python-list indexings are not worth an unproven shortcut.
"""

import json
import os

import orjson

cimport cython

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromLongLong
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memmove

from .errors import InvalidArgument, InvalidPayload, InvalidPayloadValue, ProtocolError, reply_error
from ._options import EnqueueOptions, check_id, job_options
from ._scripts import evalsha_head
from .types import Job, JobResult, MalformedJob, Paused, ReservedJob

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object value, int* overflow) except? -1
    # overflow_exception NULL: return +-inf instead of raising (we refuse it ourselves).
    double PyOS_string_to_double(const char* text, char** end, PyObject* overflow) except? -1.0

cdef extern from "<time.h>" nogil:
    """
    /* C11 timespec_get: the wall clock time.time_ns() reads, on every platform we build. */
    static int64_t omniq_now_ms(void) {
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    """
    int64_t omniq_now_ms()

cdef extern from "<math.h>" nogil:
    bint isinf(double value)
    const double INFINITY
    const double NAN

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

# --------------------------------------------------------------------------- RESP encoding

# One growable C buffer per call: every argument is written straight into it (no list of
# parts, no join) and copied once into the bytes object returned.
cdef struct _Writer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _reserve(_Writer* out, Py_ssize_t extra) except -1:
    cdef Py_ssize_t capacity
    cdef char* data
    if out.size + extra <= out.capacity:
        return 0
    capacity = max(2 * out.capacity, out.size + extra, 512)
    data = <char*>PyMem_Realloc(out.data, capacity)
    if data == NULL:
        raise MemoryError()
    out.data = data
    out.capacity = capacity
    return 0


cdef Py_ssize_t _format_decimal(char* out, long long value) noexcept:
    """Writes ``value`` in decimal at ``out`` (room for 20 bytes) and returns its length."""
    cdef char digits[20]
    cdef Py_ssize_t count = 0, length = 0
    # The magnitude as unsigned: -LLONG_MIN does not fit a long long.
    cdef unsigned long long magnitude = <unsigned long long>value
    if value < 0:
        out[0] = b"-"
        length = 1
        magnitude = 0ULL - magnitude
    while True:
        digits[count] = <char>(48 + magnitude % 10)
        count += 1
        magnitude //= 10
        if magnitude == 0:
            break
    while count:
        count -= 1
        out[length] = digits[count]
        length += 1
    return length


cdef int _write_line(_Writer* out, char marker, long long value) except -1:
    _reserve(out, 23)
    out.data[out.size] = marker
    out.size += 1 + _format_decimal(out.data + out.size + 1, value)
    out.data[out.size] = b"\r"
    out.data[out.size + 1] = b"\n"
    out.size += 2
    return 0


cdef int _write_bulk(_Writer* out, const char* data, Py_ssize_t size) except -1:
    _write_line(out, b"$", size)
    _reserve(out, size + 2)
    memcpy(out.data + out.size, data, size)
    out.data[out.size + size] = b"\r"
    out.data[out.size + size + 1] = b"\n"
    out.size += size + 2
    return 0


cdef int _write_arg(_Writer* out, object arg) except -1:
    cdef const char* text
    cdef Py_ssize_t size
    cdef long long number
    cdef int overflow = 0
    cdef char digits[20]
    if isinstance(arg, bytes):
        return _write_bulk(out, PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg))
    if type(arg) is str:
        # CPython keeps ASCII text as its own UTF-8: no copy at all for the usual argument.
        text = PyUnicode_AsUTF8AndSize(arg, &size)
        return _write_bulk(out, text, size)
    if type(arg) is int:
        number = PyLong_AsLongLongAndOverflow(arg, &overflow)
        if not overflow:
            return _write_bulk(out, digits, _format_decimal(digits, number))
    data = _arg_bytes(arg)  # subclasses, big ints, buffers: the twin's rules, verbatim
    return _write_bulk(out, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef bytes _arg_bytes(object arg):
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, int) and not isinstance(arg, bool):
        return str(arg).encode("ascii")
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    raise TypeError(f"cannot encode {type(arg).__name__} as a Redis argument")


cdef int _write_command(_Writer* out, object args) except -1:
    _write_line(out, b"*", len(args))
    for arg in args:
        _write_arg(out, arg)
    return 0


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings, ready to write to the socket."""
    cdef _Writer out = _Writer(NULL, 0, 0)
    try:
        _write_command(&out, args)
        return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        PyMem_Free(out.data)


def encode_commands(commands: Iterable[Sequence[Arg]]) -> bytes:
    """Several commands back to back: one write for a pipelined batch."""
    cdef _Writer out = _Writer(NULL, 0, 0)
    try:
        for args in commands:
            _write_command(&out, args)
        return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        PyMem_Free(out.data)


def encode_args(args: Sequence[Arg]) -> bytes:
    """Arguments as RESP bulk strings without the array header: a piece of a command whose
    length is counted elsewhere (a coalesced publish's part of an ``enqueue_batch``)."""
    cdef _Writer out = _Writer(NULL, 0, 0)
    try:
        for arg in args:
            _write_arg(&out, arg)
        return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        PyMem_Free(out.data)


# --------------------------------------------------------------------------- payloads

cdef object _ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
cdef object _orjson_dumps = orjson.dumps
cdef object _orjson_loads = orjson.loads
cdef object _JSONEncodeError = orjson.JSONEncodeError
cdef object _JSONDecodeError = orjson.JSONDecodeError


cdef bint _has_float_markers(const char* data, Py_ssize_t size) noexcept:
    """Whether ``data`` holds one of the twin's ``_FLOAT_MARKERS`` (b"e-", b"0.0000"), in
    one pass instead of two searches."""
    cdef Py_ssize_t i
    cdef char c
    for i in range(size):
        c = data[i]
        if c == b"e":
            if i + 1 < size and data[i + 1] == b"-":
                return True
        elif c == b"0":
            if i + 5 < size and memcmp(data + i + 1, b".0000", 5) == 0:
                return True
    return False


cdef bint _plain(object value) except -1:
    """Whether ``value`` is made of exactly dict (str keys), list, tuple, str, int, bool,
    None and finite floats: orjson writes such data as the stdlib does, so the twin's
    read-back (which would come back equal) is skipped. Anything else (a subclass, a UUID,
    an Enum, NaN) is left to that read-back, so both twins decide it alike. Recursion is
    bounded: orjson has already refused data nested deeper than 255."""
    cdef type kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return isfinite(<double>value)
    if kind is dict:
        for key, item in (<dict>value).items():
            if type(key) is not str or not _plain(item):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:
            if not _plain(item):
                return False
        return True
    return False


cdef object _to_structured(object payload):
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
    cdef bytes out
    data = _to_structured(payload)
    try:
        out = _orjson_dumps(data, option=_ORJSON_OPTIONS)
    except _JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise _not_serialisable(data, exc) from None
    else:
        if not _has_float_markers(PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out)) and (
            _plain(data) or _orjson_loads(out) == data
        ):
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
        return _orjson_loads(raw)
    except _JSONDecodeError:
        return raw


# --------------------------------------------------------------------------- ULIDs

cdef const char* _CROCKFORD = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
cdef object _urandom = os.urandom

# The last ULID made: its millisecond and its 80-bit random part (16 high + 64 low bits).
#
# Each read-compare-update of these three variables is one critical section on _ulid_guard.
# With the GIL (every build but a free-threaded CPython) a critical section compiles to
# nothing: a thread switch can only happen inside a Python-level operation (a call, an
# allocation that runs the garbage collector, a __del__), and none happens inside one, so the
# GIL alone makes each section atomic at no cost on the hot path. On a free-threaded CPython,
# where this module declares it needs no GIL (freethreading_compatible above), the section
# locks _ulid_guard's mutex; it holds no Python operation either, so it never blocks or
# suspends inside. The one Python call, os.urandom, sits between two sections, and the second
# re-checks what the first saw before using its result.
cdef int64_t _ulid_last_ms = -1
cdef uint32_t _ulid_rand_high = 0
cdef uint64_t _ulid_rand_low = 0
cdef object _ulid_guard = object()


cdef str _ulid_text(int64_t ms, uint32_t rand_high, uint64_t rand_low):
    # 48 bits of time then 80 of randomness, as 26 base-32 digits (the top two bits are 0).
    cdef char text[26]
    cdef uint64_t high = (<uint64_t>ms << 16) | rand_high
    cdef uint64_t low = rand_low
    cdef int i
    for i in range(25, -1, -1):
        text[i] = _CROCKFORD[low & 31]
        low = (low >> 5) | (high << 59)
        high >>= 5
    return PyUnicode_DecodeASCII(text, 26, NULL)


def new_ulid() -> str:
    """A 26-character ULID, monotonic within one millisecond in this process."""
    global _ulid_last_ms, _ulid_rand_high, _ulid_rand_low
    cdef int64_t ms, target
    cdef uint32_t rand_high
    cdef uint64_t rand_low
    cdef const unsigned char* fresh
    cdef bytes random_bytes
    cdef int i
    cdef bint done
    while True:
        ms = omniq_now_ms()
        done = False
        with cython.critical_section(_ulid_guard):  # no Python operation inside
            if ms <= _ulid_last_ms:
                if _ulid_rand_high != 0xFFFF or _ulid_rand_low != 0xFFFFFFFFFFFFFFFFULL:
                    _ulid_rand_low += 1
                    if _ulid_rand_low == 0:
                        _ulid_rand_high += 1
                    done = True
                target = _ulid_last_ms + 1
            else:
                target = ms
            ms, rand_high, rand_low = _ulid_last_ms, _ulid_rand_high, _ulid_rand_low
        if done:
            return _ulid_text(ms, rand_high, rand_low)
        random_bytes = _urandom(10)  # other threads may run here
        fresh = <const unsigned char*>PyBytes_AS_STRING(random_bytes)
        # Use the draw only if no thread has reached `target` meanwhile; otherwise go round
        # again, which now counts up from that thread's ULID.
        with cython.critical_section(_ulid_guard):  # no Python operation inside
            if target > _ulid_last_ms:
                _ulid_last_ms = target
                _ulid_rand_high = (<uint32_t>fresh[0] << 8) | fresh[1]
                _ulid_rand_low = 0
                for i in range(2, 10):
                    _ulid_rand_low = (_ulid_rand_low << 8) | fresh[i]
                rand_high, rand_low = _ulid_rand_high, _ulid_rand_low
                done = True
        if done:
            return _ulid_text(target, rand_high, rand_low)


# --------------------------------------------------------------------------- replies


cdef str _text(object item):
    if isinstance(item, bytes):
        try:
            return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item), NULL)
        except UnicodeDecodeError:
            raise ProtocolError(f"expected UTF-8 text in the reply, got {item[:40]!r}") from None
    if isinstance(item, str):
        return item
    if isinstance(item, int):
        return str(item)
    raise ProtocolError(f"expected a string in the reply, got {type(item).__name__}")


cdef object _int(object item):
    cdef const char* text
    cdef Py_ssize_t size, i
    cdef long long value = 0
    cdef bint negative
    if type(item) is bytes:
        # Short decimal text (the usual case) without int(): same value, no parsing object.
        text = PyBytes_AS_STRING(item)
        size = PyBytes_GET_SIZE(item)
        negative = size > 1 and text[0] == b"-"
        i = 1 if negative else 0
        if 0 < size - i <= 18:
            while i < size and b"0" <= text[i] <= b"9":
                value = value * 10 + (text[i] - 48)
                i += 1
            if i == size:
                return PyLong_FromLongLong(-value if negative else value)
    try:
        return int(item)
    except (TypeError, ValueError, OverflowError):
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
            "JOB",
            _text(reply[1]),
            _text(reply[2]),
            _int(reply[3]),
            _int(reply[4]),
            _int(reply[5]),
            _text(reply[6]),
            _text(reply[7]),
        )
    raise ProtocolError(f"unexpected reserve reply: {reply!r}")


def parse_reserve_batch_reply(reply: object) -> Union[List[ReservedJob], Paused]:
    """``reserve_batch``'s reply: the leased jobs in order (``[]`` when none), or ``Paused``."""
    cdef Py_ssize_t count, i, size
    cdef list jobs
    if not isinstance(reply, list) or not reply:
        raise ProtocolError(f"unexpected reserve_batch reply: {reply!r}")
    status = reply[0]
    if status == b"EMPTY" or status == "EMPTY":
        return []
    if status == b"PAUSED" or status == "PAUSED":
        return Paused()
    size = len(reply)
    if (status == b"JOB" or status == "JOB") and size >= 2:
        number = _int(reply[1])  # compared as a Python int first: it may not fit a C one
        count = number if 0 <= number <= size else -1
        if count >= 0 and size == 2 + 7 * count:
            jobs = []
            for i in range(2, size, 7):
                jobs.append(_reserved_job(reply, i))
            return jobs
    raise ProtocolError(f"unexpected reserve_batch reply: {reply!r}")


cdef object _reserved_job(object reply, Py_ssize_t i):
    cdef str payload
    try:
        payload = _text(reply[i + 1])
        job = ReservedJob(
            "JOB",
            _text(reply[i]),
            payload,
            _int(reply[i + 2]),
            _int(reply[i + 3]),
            _int(reply[i + 4]),
            _text(reply[i + 5]),
            _text(reply[i + 6]),
        )
    except ProtocolError:
        return _malformed_job(reply[i : i + 7])
    if not payload:
        return _malformed_job(reply[i : i + 7])
    return job


_RESERVED_FIELDS = ("job id", "payload", "timeout_ms", "attempt", "max_attempts", "gid",
                    "lease_token")


cdef tuple _loose_text(object item):
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


cdef object _malformed_job(object items):
    # Off the hot path: the twin's code as it is.
    cdef list problems = []
    cdef list values = []
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
    cdef _Writer out = _Writer(NULL, 0, 0)
    cdef list ids = []
    cdef Py_ssize_t n = len(items)
    # The defaults' six arguments are the same for every plain payload: encode them once.
    cdef _Writer shared = _Writer(NULL, 0, 0)
    cdef tuple opts
    try:
        _write_line(&out, b"*", 6 + 8 * n)
        for arg in evalsha_head(sha, anchor) + (now_ms, n):
            _write_arg(&out, arg)
        for arg in defaults:
            _write_arg(&shared, arg)
        for item in items:
            if isinstance(item, Job):
                opts = job_options(item, defaults)
                body = dumps_payload(item.payload)
                job_id = check_id("job_id", item.job_id) if item.job_id else new_ulid()
            else:
                opts = None
                body = dumps_payload(item)
                job_id = new_ulid()
            _write_arg(&out, job_id)
            _write_arg(&out, body)
            if opts is None:
                _reserve(&out, shared.size)
                memcpy(out.data + out.size, shared.data, shared.size)
                out.size += shared.size
            else:
                for arg in opts:
                    _write_arg(&out, arg)
            ids.append(job_id)
        return PyBytes_FromStringAndSize(out.data, out.size), ids
    finally:
        PyMem_Free(out.data)
        PyMem_Free(shared.data)


cdef tuple _lease_fields(object lease):
    if isinstance(lease, ReservedJob):
        return lease.job_id, lease.lease_token
    try:
        job_id, token = lease[0], lease[1]
    except (TypeError, IndexError, KeyError):
        job_id = token = None
    if type(job_id) is not str or type(token) is not str:
        if not isinstance(job_id, str) or not isinstance(token, str):
            raise InvalidArgument(
                f"a lease is a ReservedJob or (job_id, lease_token), not {lease!r}"
            )
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
    cdef _Writer out = _Writer(NULL, 0, 0)
    cdef list ids = []
    cdef Py_ssize_t n = len(leases), i = 0
    cdef int width = 2 if errors is None else 3
    try:
        _write_line(&out, b"*", 6 + width * n)
        for arg in evalsha_head(sha, anchor) + (now_ms, n):
            _write_arg(&out, arg)
        for lease in leases:
            job_id, token = _lease_fields(lease)
            _write_arg(&out, job_id)
            _write_arg(&out, token)
            if errors is not None:
                _write_arg(&out, errors[i] or "")
            ids.append(job_id)
            i += 1
        return PyBytes_FromStringAndSize(out.data, out.size), ids
    finally:
        PyMem_Free(out.data)


cdef object _ms(object item):
    try:
        return _int(item)
    except ProtocolError:
        return None


def parse_job_results(reply: object, job_ids: Sequence[str], width: int) -> List[JobResult]:
    """A per-lease batch reply: ``width`` fields per job (``[status]`` for acks, which
    answer a refused job with the bare reason; ``[status, value]`` for the others)."""
    cdef Py_ssize_t i = 0, n = len(job_ids), w = width
    cdef list results = []
    cdef list items
    if not isinstance(reply, list) or len(reply) != w * n:
        raise ProtocolError(f"unexpected batch reply: {reply!r}")
    items = reply
    for job_id in job_ids:
        status = items[i * w]
        if type(status) is not bytes and type(status) is not str:
            # The twin's reading of anything else: ints as text, bytearray or junk refused.
            status = _text(status)
        value = items[i * w + 1] if w > 1 else b""
        if status == b"OK" or status == "OK":
            results.append(JobResult(job_id, "OK", _ms(value) if value else None))
        elif status == b"RETRY" or status == "RETRY":
            results.append(JobResult(job_id, "RETRY", _ms(value)))
        elif status == b"FAILED" or status == "FAILED":
            results.append(JobResult(job_id, "FAILED"))
        elif status == b"ERR" or status == "ERR":
            results.append(JobResult(job_id, "ERR", None, _text(value)))
        else:
            results.append(JobResult(job_id, "ERR", None, _text(status)))
        i += 1
    return results


include "_reply_parser.pxi"
