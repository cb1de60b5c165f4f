"""The hot functions (``_core_py`` and, when built, ``_core``): pure, no server needed."""

from __future__ import annotations

import enum
import json
import math
import sys
import sysconfig
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection

from omniq_fast import InvalidPayload, InvalidPayloadValue, Paused, ProtocolError, ReservedJob
from omniq_fast.errors import OmniqError

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")

# --------------------------------------------------------------------------- RESP encoding

redis_args = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.text(max_size=32),
        st.integers(-(2**63), 2**63 - 1),
        st.just(b"\x00" * 70_001),  # bigger than redis-py's buffer cut-off
    ),
    max_size=8,
)


@given(args=redis_args)
def test_encode_command_matches_redis_py(core: ModuleType, args: list[Any]) -> None:
    # redis-py splits a first argument on spaces ("CONFIG GET"), so lead with a real name.
    args = [b"EVALSHA", *args]
    expected = b"".join(Connection().pack_command(*args))
    assert core.encode_command(args) == expected


def test_encode_commands_concatenates(core: ModuleType) -> None:
    cmds = [[b"PING"], ["SET", "k", 5], ["GET", "é"]]
    assert core.encode_commands(cmds) == b"".join(core.encode_command(c) for c in cmds)


@pytest.mark.parametrize("bad", [True, 1.5, None, object()])
def test_encode_command_refuses_ambiguous_arguments(core: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        core.encode_command([b"SET", b"k", bad])


# --------------------------------------------------------------------------- payloads

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(st.characters(blacklist_categories=("Cs",))),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",))), children, max_size=4),
    ),
    max_leaves=20,
)
structured = st.one_of(
    st.lists(json_values, max_size=4),
    st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",))), json_values, max_size=4),
)


def official_encoding(payload: Any) -> bytes:
    """What the official SDK writes (PROTOCOL.md §1)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@given(payload=structured)
def test_payload_bytes_match_the_official_encoding(core: ModuleType, payload: Any) -> None:
    assert core.dumps_payload(payload) == official_encoding(payload)


@pytest.mark.parametrize(
    "payload",
    [{"f": 1.5e-7}, [1e-05, 0.0001, 1e16, -0.0], {"s": "null e- 0.0000"}, {"n": None}, [2**64]],
)
def test_payload_edge_numbers_match(core: ModuleType, payload: Any) -> None:
    assert core.dumps_payload(payload) == official_encoding(payload)


NONE_PAYLOADS = [
    ({"a": None}, b'{"a":null}'),
    ([1, None], b"[1,null]"),
    ({"a": [None, {"b": None}], "n": "null"}, b'{"a":[null,{"b":null}],"n":"null"}'),
    ({"x": None, "y": 1.5, "z": [True, None, "\u00e9"]}, '{"x":null,"y":1.5,"z":[true,null,"\u00e9"]}'.encode()),
]


@pytest.mark.parametrize(("payload", "expected"), NONE_PAYLOADS)
def test_none_payloads_take_the_fast_path(
    core: ModuleType, payload: Any, expected: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bytes the stdlib path wrote before None went to orjson, and still writes.
    assert core.dumps_payload(payload) == expected == official_encoding(payload)

    class NoStdlib:
        def dumps(self, *args: Any, **kwargs: Any) -> str:
            raise AssertionError("None sent the payload to the slow stdlib encoder")

    monkeypatch.setattr(core, "json", NoStdlib())
    assert core.dumps_payload(payload) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_none_beside_nan_is_still_refused(core: ModuleType, bad: float) -> None:
    # orjson writes NaN as null too: a null that reads back unequal goes to the stdlib.
    with pytest.raises(InvalidPayloadValue):
        core.dumps_payload({"a": None, "b": [None, bad]})


class Colour(enum.Enum):
    RED = "red"


class Size(int, enum.Enum):
    BIG = 2


# orjson writes a UUID and an Enum, the stdlib (the official SDK) refuses them. Whatever
# else the payload holds (a None, text that looks like a float or a null) must not change
# that: before, a payload was read back only when its output held a null, so these were
# accepted alone and refused beside a None.
@pytest.mark.parametrize("foreign", [uuid.UUID(int=7), Colour.RED], ids=["uuid", "enum"])
@pytest.mark.parametrize("beside", [{}, {"n": None}, {"s": "null e- 0.0000"}], ids=["alone", "none", "text"])
def test_what_json_has_no_type_for_is_refused_whatever_else_the_payload_holds(
    core: ModuleType, foreign: Any, beside: dict[str, Any]
) -> None:
    payload = {"x": foreign, **beside}
    with pytest.raises(TypeError):
        official_encoding(payload)
    with pytest.raises(InvalidPayload, match=r"\$\.x is a (UUID|Colour)"):
        core.dumps_payload(payload)


@pytest.mark.parametrize("beside", [{}, {"n": None}], ids=["alone", "none"])
def test_int_and_str_subclasses_are_written_as_the_stdlib_writes_them(
    core: ModuleType, beside: dict[str, Any]
) -> None:
    class Name(str):
        pass

    payload = {"size": Size.BIG, "name": Name("é"), "pair": (1, None), **beside}
    assert core.dumps_payload(payload) == official_encoding(payload)


@pytest.mark.parametrize("payload", ["text", 1, 1.5, None, b"raw", True, (1, 2), {1, 2}])
def test_payload_must_be_structured(core: ModuleType, payload: Any) -> None:
    with pytest.raises(InvalidPayload) as info:
        core.dumps_payload(payload)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, OmniqError)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_payload_rejects_nan_and_infinity(core: ModuleType, bad: float) -> None:
    for payload in ({"x": bad}, [1, [bad]]):
        with pytest.raises(InvalidPayloadValue) as info:
            core.dumps_payload(payload)
        # Catchable as either builtin, like the stdlib's ValueError for allow_nan=False.
        assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize("payload", [{1: "a"}, {"a": {None: 1}}, {(1, 2): 3}])
def test_payload_rejects_non_string_keys(core: ModuleType, payload: Any) -> None:
    with pytest.raises(InvalidPayload, match="str"):
        core.dumps_payload(payload)


def test_payload_rejects_non_json_values(core: ModuleType) -> None:
    import datetime

    with pytest.raises(InvalidPayload):
        core.dumps_payload({"when": datetime.datetime(2026, 1, 1)})
    with pytest.raises(InvalidPayload):
        core.dumps_payload({"s": "\ud800"})


def test_payload_converts_dataclasses_and_models(core: ModuleType) -> None:
    from dataclasses import dataclass

    import pydantic

    @dataclass
    class Order:
        id: int
        tags: list[str]

    class Model(pydantic.BaseModel):
        id: int
        name: str

    assert core.dumps_payload(Order(7, ["a"])) == b'{"id":7,"tags":["a"]}'
    assert core.dumps_payload(Model(id=1, name="é")) == '{"id":1,"name":"é"}'.encode()


def test_loads_payload_falls_back_to_text(core: ModuleType) -> None:
    assert core.loads_payload('{"a":[1,2]}') == {"a": [1, 2]}
    assert core.loads_payload("not json") == "not json"


# --------------------------------------------------------------------------- ULIDs


def test_ulid_shape_and_time(core: ModuleType) -> None:
    before = time.time_ns() // 1_000_000
    ulid = core.new_ulid()
    after = time.time_ns() // 1_000_000
    assert len(ulid) == 26 and set(ulid) <= CROCKFORD
    ms = 0
    for ch in ulid[:10]:
        ms = ms * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(ch)
    assert before <= ms <= after + 1


def test_ulids_are_unique_and_monotonic(core: ModuleType) -> None:
    ids = [core.new_ulid() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_ulids_from_many_threads_are_unique_and_monotonic_per_thread(core: ModuleType) -> None:
    # Threads switch at os.urandom, between new_ulid's two sections on the shared state (and
    # anywhere on a free-threaded CPython): a draw taken for a millisecond another thread has
    # reached meanwhile must be dropped, or two threads would hand out the same ULID.
    per_thread = 5_000
    start = threading.Barrier(8)

    def make() -> list[str]:
        start.wait()
        return [core.new_ulid() for _ in range(per_thread)]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # with the GIL: switch threads as often as it can
    try:
        with ThreadPoolExecutor(8) as pool:
            runs = list(pool.map(lambda _: make(), range(8)))
    finally:
        sys.setswitchinterval(interval)
    for ids in runs:
        assert ids == sorted(ids) and len(set(ids)) == per_thread
    assert len({ulid for ids in runs for ulid in ids}) == 8 * per_thread


@pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"), reason="needs a free-threaded CPython"
)
def test_compiled_core_keeps_the_gil_off() -> None:
    # A module that does not declare itself free-threading compatible turns the GIL back on
    # for the whole process when imported; the compiled core declares it (its lock-free
    # state is behind critical sections).
    from omniq_fast import _core  # noqa: F401

    assert not sys._is_gil_enabled()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- replies


def test_parse_reserve_reply(core: ModuleType) -> None:
    job = core.parse_reserve_reply(
        [b"JOB", b"J1", b'{"a":1}', b"1700000030000", b"2", b"3", b"", b"ab" * 20]
    )
    assert job == ReservedJob("JOB", "J1", '{"a":1}', 1700000030000, 2, 3, "", "ab" * 20)
    assert core.parse_reserve_reply([b"EMPTY"]) is None
    assert core.parse_reserve_reply([b"PAUSED"]) == Paused()


@pytest.mark.parametrize(
    "reply",
    [[], b"JOB", None, [b"WHAT"], [b"JOB", b"J1"], [b"JOB", b"J", b"{}", b"x", b"1", b"1", b"", b"t"]],
)
def test_parse_reserve_reply_rejects_malformed(core: ModuleType, reply: Any) -> None:
    with pytest.raises(ProtocolError):
        core.parse_reserve_reply(reply)


def test_bad_text_and_numbers_in_replies_are_protocol_errors(core: ModuleType) -> None:
    # Bytes that are not UTF-8 and numbers no int holds are the server's answer, reported
    # as ProtocolError naming what was read, never as a decoding or overflow error.
    job = [b"JOB", b"J\xff", b"{}", b"1", b"1", b"1", b"", b"t"]
    with pytest.raises(ProtocolError, match=r"expected UTF-8 text in the reply, got b'J\\xff'"):
        core.parse_reserve_reply(job)
    with pytest.raises(ProtocolError, match="expected UTF-8 text"):
        core.parse_job_results([b"\xfe"], ["J1"], 1)
    with pytest.raises(ProtocolError, match="expected UTF-8 text"):
        core.parse_job_results([b"ERR", b"bad \xc3"], ["J1"], 2)
    with pytest.raises(ProtocolError, match="expected a string in the reply, got bytearray"):
        core.parse_job_results([bytearray(b"OK")], ["J1"], 1)
    with pytest.raises(ProtocolError, match="expected an integer in the reply, got inf"):
        core.parse_reserve_reply([b"JOB", b"J", b"{}", math.inf, b"1", b"1", b"", b"t"])
    with pytest.raises(ProtocolError, match="unexpected reserve_batch reply"):
        core.parse_reserve_batch_reply([b"JOB", b"9" * 30])
