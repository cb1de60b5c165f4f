"""The compiled core and its pure-Python twin: one surface, one set of answers.

The twin is the reference; the compiled core may only be faster. These tests need the
extension (an ImportError here is a broken build and fails the run); with
``OMNIQ_FAST_NO_EXTENSIONS`` set they check what the pure install promises instead.
"""

from __future__ import annotations

import enum
import inspect
import math
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import omniq_fast
from omniq_fast import _compat, _core_py
from omniq_fast.errors import ProtocolError
from omniq_fast._options import enqueue_options
from omniq_fast.types import Job, ReservedJob

NO_EXTENSIONS = bool(os.environ.get("OMNIQ_FAST_NO_EXTENSIONS"))
PACKAGE = Path(_core_py.__file__).parent

pytestmark = pytest.mark.c_extension


@pytest.fixture(scope="module")
def compiled() -> ModuleType:
    if NO_EXTENSIONS:
        pytest.skip("OMNIQ_FAST_NO_EXTENSIONS is set: no compiled core to compare")
    from omniq_fast import _core

    return _core


# --------------------------------------------------------------------------- surface


def test_same_public_names(compiled: ModuleType) -> None:
    assert compiled.__all__ == _core_py.__all__
    for name in _core_py.__all__:
        assert hasattr(compiled, name), name


def _defined_in_order(source: str) -> list[str]:
    names = re.findall(r"^(?:cdef )?(?:def|class) (\w+)", source, re.MULTILINE)
    return [name for name in names if name in _core_py.__all__]


def test_same_order_of_definitions() -> None:
    # The twins read side by side: the public names appear in __all__'s order in both.
    twin = (PACKAGE / "_core_py.py").read_text()
    compiled = (PACKAGE / "_core.pyx").read_text() + (PACKAGE / "_reply_parser.pxi").read_text()
    assert _defined_in_order(twin) == _core_py.__all__
    assert _defined_in_order(compiled) == _core_py.__all__


def _public_callables(module: ModuleType) -> dict[str, Any]:
    found = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj):
            for attr in dir(obj):
                if not attr.startswith("_") and callable(getattr(obj, attr)):
                    if attr not in dir(list):  # PushNotification's inherited methods
                        found[f"{name}.{attr}"] = getattr(obj, attr)
        else:
            found[name] = obj
    return found


def test_same_signatures_and_docs(compiled: ModuleType) -> None:
    ours, theirs = _public_callables(compiled), _public_callables(_core_py)
    assert sorted(ours) == sorted(theirs)
    for name, twin in theirs.items():
        assert inspect.signature(ours[name]) == inspect.signature(twin), name
        # embedsignature puts the signature line first; the text after it is the twin's.
        assert inspect.cleandoc(twin.__doc__ or "") in (ours[name].__doc__ or ""), name
    for name in ("PushNotification", "ReplyParser"):
        assert inspect.getdoc(getattr(compiled, name)) == inspect.getdoc(getattr(_core_py, name))


def test_compat_exports_the_whole_surface() -> None:
    for name in _core_py.__all__:
        assert hasattr(_compat, name), name


def _implementation(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("OMNIQ_FAST_NO_EXTENSIONS", None)
    if env_value is not None:
        env["OMNIQ_FAST_NO_EXTENSIONS"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", "import omniq_fast; print(omniq_fast.IMPLEMENTATION)"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_implementation_is_cython_when_built(compiled: ModuleType) -> None:
    assert omniq_fast.IMPLEMENTATION == "cython"
    assert _implementation(None) == "cython"
    assert _compat.ReplyParser is compiled.ReplyParser


def test_no_extensions_variable_forces_the_twin() -> None:
    assert _implementation("1") == "python"
    if NO_EXTENSIONS:
        assert omniq_fast.IMPLEMENTATION == "python"
        assert _compat.ReplyParser is _core_py.ReplyParser


# --------------------------------------------------------------------------- answers


def outcome(call: Any, *args: Any) -> Any:
    """What a call gives: its result, or the class and message of what it raised."""
    try:
        return ("ok", call(*args))
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return ("raised", type(exc), str(exc))


arguments = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20),
    st.integers(),
    st.booleans(),
    st.floats(),
    st.none(),
    st.binary(max_size=10).map(bytearray),
    st.binary(max_size=10).map(memoryview),
    st.sampled_from(["\ud800", -(2**63), 2**63, 2**64]),
)
commands = st.lists(arguments, max_size=8)


@given(command=commands)
def test_encode_command_is_identical(compiled: ModuleType, command: list[Any]) -> None:
    assert outcome(compiled.encode_command, command) == outcome(_core_py.encode_command, command)


@given(batch=st.lists(commands, max_size=5))
def test_encode_commands_is_identical(compiled: ModuleType, batch: list[list[Any]]) -> None:
    assert outcome(compiled.encode_commands, batch) == outcome(_core_py.encode_commands, batch)


@given(command=commands)
def test_encode_args_is_identical(compiled: ModuleType, command: list[Any]) -> None:
    assert outcome(compiled.encode_args, command) == outcome(_core_py.encode_args, command)


class _Colour(enum.Enum):
    RED = "red"


class _Size(int, enum.Enum):
    BIG = 2


class _Name(str):
    pass


# What orjson writes and the stdlib refuses (a UUID, an Enum) or writes its own way (int
# and str subclasses) sits among the leaves: the twins must decide each alike.
keys = st.one_of(st.text(max_size=8), st.integers(), st.none(), st.sampled_from(["\udfff"]))
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["null", "e-", "0.0000", "\ud800", b"raw", {1, 2}, (1, 2), math.nan,
                     uuid.UUID(int=1), _Colour.RED, _Size.BIG, _Name("n")]),
)
payloads = st.one_of(
    st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=15,
    ),
    st.sampled_from(["text", b"bytes", 1, None]),
)


@given(payload=payloads)
def test_dumps_payload_is_identical(compiled: ModuleType, payload: Any) -> None:
    assert outcome(compiled.dumps_payload, payload) == outcome(_core_py.dumps_payload, payload)


@given(raw=st.one_of(st.text(max_size=30), st.from_regex(r'\{"a":\[1,2(,3)?\]\}', fullmatch=True)))
def test_loads_payload_is_identical(compiled: ModuleType, raw: str) -> None:
    ours, theirs = outcome(compiled.loads_payload, raw), outcome(_core_py.loads_payload, raw)
    assert repr(ours) == repr(theirs)


reply_items = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"JOB", b"EMPTY", b"PAUSED", "JOB", b"12", b"-3", b"007", b" 4", b"1_0",
                     b"\xff", b"99999999999999999999", b"-", b""]),
    st.integers(),
    st.floats(allow_nan=False),
    st.none(),
    st.text(max_size=5),
)  # fmt: skip


@given(reply=st.one_of(st.lists(reply_items, max_size=10), reply_items))
def test_parse_reserve_reply_is_identical(compiled: ModuleType, reply: Any) -> None:
    if isinstance(reply, list) and len(reply) >= 8 and reply[0] != b"EMPTY":
        reply[0] = b"JOB"
    ours = outcome(compiled.parse_reserve_reply, reply)
    theirs = outcome(_core_py.parse_reserve_reply, reply)
    assert ours == theirs


job_fields = st.one_of(
    reply_items,
    st.sampled_from([b"1.0000000179616e+20", b"inf", b"-nan", b"1e+300", b"\xff\xfe", b"ok",
                     b"1796161369841", b"3", b"\xc3\xa9"]),
)  # fmt: skip


@given(jobs=st.lists(st.lists(job_fields, min_size=7, max_size=7), max_size=4))
def test_parse_reserve_batch_reply_is_identical(compiled: ModuleType, jobs: list[Any]) -> None:
    # Well-formed framing, any job fields: malformed jobs come out the same in both twins.
    reply = [b"JOB", str(len(jobs)).encode()] + [item for job in jobs for item in job]
    ours = outcome(compiled.parse_reserve_batch_reply, reply)
    theirs = outcome(_core_py.parse_reserve_batch_reply, reply)
    assert repr(ours) == repr(theirs)


@given(values=st.lists(job_fields, max_size=6), width=st.sampled_from([1, 2]))
def test_parse_job_results_is_identical(compiled: ModuleType, values: list[Any], width: int) -> None:
    statuses = [b"OK", b"RETRY", b"FAILED", b"ERR", b"NOPE"]
    reply, ids = [], []
    for i, value in enumerate(values):
        reply.append(statuses[i % len(statuses)])
        if width == 2:
            reply.append(value)
        ids.append(f"J{i}")
    ours = outcome(compiled.parse_job_results, reply, ids, width)
    theirs = outcome(_core_py.parse_job_results, reply, ids, width)
    assert repr(ours) == repr(theirs)


streams = st.lists(
    st.one_of(
        st.sampled_from([b"*2\r\n", b"%1\r\n", b">1\r\n", b"$3\r\nabc\r\n", b":-12\r\n",
                         b",1.5\r\n", b"#t\r\n", b"_\r\n", b"-ERR x\r\n", b"(9\r\n", b"+\r\n"]),
        st.binary(max_size=4),
    ),
    max_size=20,
).map(b"".join)  # fmt: skip


@given(data=streams, cut=st.integers(0, 200))
def test_reply_parsers_are_identical(compiled: ModuleType, data: bytes, cut: int) -> None:
    def run(module: ModuleType) -> list[Any]:
        parser, seen = module.ReplyParser(), []
        for piece in (data[:cut], data[cut:]):
            parser.feed(piece)
            for _ in range(len(data) + 1):
                result = outcome(parser.gets)
                seen.append(repr(result).replace(module.__name__, "core"))
                if result[0] == "raised" or result[1] is False:
                    break
        return seen

    assert run(compiled) == run(_core_py)


# --------------------------------------------------------------------------- malformed input
#
# What a broken server, a hand-edited job hash or a caller's mistake can hand the batch
# functions. The reply parsers must answer it with ProtocolError and nothing else (a
# UnicodeDecodeError or OverflowError escaping them would read as a bug in the caller), and
# both twins must give the same answer, message included.

scalar_junk = st.one_of(
    st.binary(max_size=8),
    st.sampled_from([b"OK", b"RETRY", b"FAILED", b"ERR", b"JOB", b"EMPTY", b"PAUSED", "OK",
                     "ERR", b"\xff", b"\xc3", b"ok\xfe", b"12", b"-7", b"1e3", b"inf", b"nan",
                     b"99999999999999999999", b"", b"-", b" 5 "]),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.binary(max_size=4).map(bytearray),
    st.binary(max_size=4).map(memoryview),
    st.just(ProtocolError("nested")),
)  # fmt: skip
junk = st.recursive(
    scalar_junk,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.binary(max_size=3), children, max_size=2)
    ),
    max_leaves=8,
)


def _same_outcome(ours: Any, theirs: Any) -> None:
    assert repr(ours) == repr(theirs)


# The rare shapes (bad UTF-8 in one field of a right-sized reply) need more than the
# default hundred draws to turn up on every run.
junk_settings = settings(max_examples=300)


@junk_settings
@given(reply=st.one_of(junk, st.lists(junk, max_size=16)))
def test_parse_reserve_batch_reply_on_junk(compiled: ModuleType, reply: Any) -> None:
    ours = outcome(compiled.parse_reserve_batch_reply, reply)
    theirs = outcome(_core_py.parse_reserve_batch_reply, reply)
    _same_outcome(ours, theirs)
    assert theirs[0] == "ok" or theirs[1] is ProtocolError, theirs


@junk_settings
@given(
    head=st.sampled_from([b"JOB", "JOB"]),
    count=st.one_of(st.integers(-1, 3).map(lambda n: str(n).encode()), scalar_junk),
    fields=st.lists(junk, max_size=22),
)
def test_parse_reserve_batch_reply_on_bad_framing(
    compiled: ModuleType, head: Any, count: Any, fields: list[Any]
) -> None:
    # Mostly the right shape, so the per-job code is reached with junk in its fields.
    reply = [head, count, *fields]
    ours = outcome(compiled.parse_reserve_batch_reply, reply)
    theirs = outcome(_core_py.parse_reserve_batch_reply, reply)
    _same_outcome(ours, theirs)
    assert theirs[0] == "ok" or theirs[1] is ProtocolError, theirs


@junk_settings
@given(reply=st.one_of(junk, st.lists(junk, max_size=9)))
def test_parse_reserve_reply_on_junk(compiled: ModuleType, reply: Any) -> None:
    if isinstance(reply, list) and len(reply) >= 8:
        reply[0] = b"JOB"
    ours = outcome(compiled.parse_reserve_reply, reply)
    theirs = outcome(_core_py.parse_reserve_reply, reply)
    _same_outcome(ours, theirs)
    assert theirs[0] == "ok" or theirs[1] is ProtocolError, theirs


statuses = st.one_of(st.sampled_from([b"OK", b"RETRY", b"FAILED", b"ERR", "OK", "RETRY"]),
                     scalar_junk)  # fmt: skip


@junk_settings
@given(
    entries=st.lists(st.tuples(statuses, st.one_of(scalar_junk, junk)), max_size=4),
    width=st.sampled_from([1, 2]),
    shape=st.sampled_from(["exact", "exact", "exact", "short", "long", "junk"]),
    other=junk,
)
def test_parse_job_results_on_junk(
    compiled: ModuleType, entries: list[Any], width: int, shape: str, other: Any
) -> None:
    ids = [f"J{i}" for i in range(len(entries))]
    reply = [field for entry in entries for field in entry[:width]]
    if shape == "short":
        reply = reply[:-1]
    elif shape == "long":
        reply.append(other)
    elif shape == "junk":
        reply = other
    ours = outcome(compiled.parse_job_results, reply, ids, width)
    theirs = outcome(_core_py.parse_job_results, reply, ids, width)
    _same_outcome(ours, theirs)
    assert theirs[0] == "ok" or theirs[1] is ProtocolError, theirs


def _encoded(module: ModuleType, call: str, *args: Any) -> Any:
    """An encoder's outcome with the fresh ULIDs it made replaced by their position, so two
    runs compare equal."""
    result = outcome(getattr(module, call), *args)
    if result[0] != "ok":
        return result
    command, ids = result[1]
    for i, job_id in enumerate(ids):
        command = command.replace(job_id.encode(), b"<id%d>" % i)
    return ("ok", command, [f"<id{i}>" if len(j) == 26 else j for i, j in enumerate(ids)])


header_args = st.one_of(st.text(max_size=6), st.binary(max_size=6), st.integers(), st.none(),
                        st.floats(), st.booleans(), st.just("\ud800"))  # fmt: skip
option_values = st.one_of(st.none(), st.integers(-2, 2**40), st.booleans(), st.text(max_size=3),
                          st.floats(0, 10))  # fmt: skip
jobs = st.builds(
    Job,
    payload=payloads,
    job_id=st.one_of(st.none(), st.text(max_size=4), st.integers(), st.just("x" * 300)),
    max_attempts=option_values,
    timeout_ms=option_values,
    backoff_ms=option_values,
    due_ms=option_values,
    gid=st.one_of(st.none(), st.text(max_size=4), st.integers()),
    group_limit=option_values,
)


@junk_settings
@given(
    sha=header_args,
    anchor=header_args,
    now_ms=header_args,
    items=st.one_of(st.lists(st.one_of(payloads, jobs), max_size=4), header_args),
    gid=st.sampled_from([None, "g", "\udc80"]),
)
def test_encode_enqueue_batch_is_identical(
    compiled: ModuleType, sha: Any, anchor: Any, now_ms: Any, items: Any, gid: Any
) -> None:
    defaults = enqueue_options(3, 1000, 10, 0, None, 0)[:4] + (gid or "", 0)
    ours = _encoded(compiled, "encode_enqueue_batch", sha, anchor, now_ms, items, defaults)
    theirs = _encoded(_core_py, "encode_enqueue_batch", sha, anchor, now_ms, items, defaults)
    assert ours == theirs


@settings(max_examples=50)
@given(
    items=st.lists(st.tuples(payloads, st.one_of(st.none(), st.sampled_from(["id1", "été"])),
                             st.sampled_from([(3, 30000, 5000, 0, None, 0), (1, 5, 0, 7, "g", 2)])),
                   min_size=1, max_size=4),
)
def test_coalesced_parts_make_the_batch_command(items: list[Any]) -> None:
    """The asyncio client's coalesced publishes, each encoded as its part in its caller,
    join into the very bytes ``encode_enqueue_batch`` makes for the same jobs (both cores)."""
    from omniq_fast._protocol.coalesce import batch_command, checked_item

    cores = [_core_py] + ([] if NO_EXTENSIONS else [pytest.importorskip("omniq_fast._core")])
    for core in cores:
        jobs, ids, parts = [], [], []
        tails: dict[Any, bytes] = {}
        for payload, job_id, options in items:
            try:
                anchor, the_id, part = checked_item(core, tails, "q", payload, job_id, *options)
            except Exception:
                continue  # refused in its caller, as a single publish refuses it
            jobs.append(Job(payload, the_id, *options))
            ids.append(the_id)
            parts.append(part)
        if not jobs:
            continue
        data, same_ids = core.encode_enqueue_batch(b"sha", anchor, 42, jobs, (3, 30000, 5000, 0, "", 0))
        assert same_ids == ids
        assert batch_command(core, b"sha", anchor, 42, parts) == data


lease_like = st.one_of(
    st.builds(ReservedJob, st.just("JOB"), st.text(max_size=4), st.text(max_size=4),
              st.integers(0, 9), st.integers(0, 9), st.integers(0, 9), st.text(max_size=3),
              st.one_of(st.text(max_size=4), st.none())),
    st.tuples(st.text(max_size=4), st.text(max_size=4)),
    st.lists(st.one_of(st.text(max_size=4), st.integers(), st.none(), st.binary(max_size=3)),
             max_size=3),
    st.text(max_size=3),
    st.none(),
    st.integers(),
)  # fmt: skip


@junk_settings
@given(
    sha=header_args,
    now_ms=header_args,
    leases=st.one_of(st.lists(lease_like, max_size=4), st.none()),
    errors=st.one_of(
        st.none(),
        st.lists(st.one_of(st.text(max_size=4), st.none(), st.integers(), st.binary(max_size=3),
                           st.floats(), st.just("\ud800")), max_size=5),
    ),
)  # fmt: skip
def test_encode_lease_batch_is_identical(
    compiled: ModuleType, sha: Any, now_ms: Any, leases: Any, errors: Any
) -> None:
    ours = outcome(compiled.encode_lease_batch, sha, "{q}", now_ms, leases, errors)
    theirs = outcome(_core_py.encode_lease_batch, sha, "{q}", now_ms, leases, errors)
    assert repr(ours) == repr(theirs)
