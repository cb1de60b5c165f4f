"""``ReplyParser`` (both twins) against ``hiredis.Reader``, the parser redis-py uses.

Valid RESP2/RESP3 streams, split anywhere, must parse exactly as hiredis parses them. On
garbage we may be stricter than hiredis (it does not check a bulk string's CRLF, for one)
but never more lenient: each call answers as hiredis does until ours raises
:class:`ProtocolError`, and nothing crashes, hangs or grows without bound.
"""

from __future__ import annotations

import random
import time
from types import ModuleType
from typing import Any, Callable, Iterator

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniq_fast.errors import ProtocolError, ReplyError

CRLF = b"\r\n"

# --------------------------------------------------------------------------- reply trees
# A tree is a tuple: ("bulk", b), ("array", [trees]), ("map", [(key, value)]), ... and
# ``serialise`` turns it into RESP bytes. hiredis tells what it should parse to.

line_bytes = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"r").replace(b"\n", b"n"))
DOUBLE_FORMATS: list[Callable[[float], str]] = [repr, lambda x: "%.17g" % x, lambda x: "%e" % x]

scalars = st.one_of(
    st.tuples(st.just("bulk"), st.binary(max_size=40)),
    st.tuples(st.just("status"), line_bytes),
    st.tuples(st.just("error"), line_bytes),
    st.tuples(st.just("int"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("double"), st.floats(), st.sampled_from(DOUBLE_FORMATS)),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("bignum"), st.integers(-(10**40), 10**40)),
    st.tuples(st.just("verbatim"), st.sampled_from([b"txt", b"mkd"]), st.binary(max_size=20)),
    st.sampled_from([("nil",), ("null",), ("nil_aggregate", b"*"), ("nil_aggregate", b"%")]),
)


def _aggregates(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    pairs = st.lists(st.tuples(scalars, children), max_size=3)  # map keys are scalars
    return st.one_of(
        st.tuples(st.sampled_from(["array", "set", "push"]), st.lists(children, max_size=4)),
        st.tuples(st.sampled_from(["map", "attribute"]), pairs),
    )


trees = st.recursive(scalars, _aggregates, max_leaves=20)

AGGREGATE_BYTES = {"array": b"*", "set": b"~", "push": b">", "map": b"%", "attribute": b"|"}


def serialise(tree: Any) -> bytes:
    kind = tree[0]
    if kind in ("bulk", "verbatim"):
        data = tree[1] if kind == "bulk" else tree[1] + b":" + tree[2]
        return b"%s%d\r\n%s\r\n" % (b"$" if kind == "bulk" else b"=", len(data), data)
    if kind == "status":
        return b"+" + tree[1] + CRLF
    if kind == "error":
        return b"-" + tree[1] + CRLF
    if kind == "int":
        return b":%d\r\n" % tree[1]
    if kind == "double":
        return b"," + tree[2](tree[1]).encode() + CRLF
    if kind == "bool":
        return b"#t\r\n" if tree[1] else b"#f\r\n"
    if kind == "bignum":
        return b"(%d\r\n" % tree[1]
    if kind == "nil":
        return b"$-1\r\n"
    if kind == "null":
        return b"_\r\n"
    if kind == "nil_aggregate":
        return tree[1] + b"-1\r\n"
    marker = AGGREGATE_BYTES[kind]
    if kind in ("map", "attribute"):
        body = b"".join(serialise(k) + serialise(v) for k, v in tree[1])
    else:
        body = b"".join(serialise(child) for child in tree[1])
    return b"%s%d\r\n%s" % (marker, len(tree[1]), body)


def depth(tree: Any) -> int:
    if tree[0] in ("map", "attribute"):
        return 1 + max((max(depth(k), depth(v)) for k, v in tree[1]), default=0)
    if tree[0] in AGGREGATE_BYTES:
        return 1 + max((depth(child) for child in tree[1]), default=0)
    return 0


streams = st.lists(trees.filter(lambda t: depth(t) <= 30), min_size=1, max_size=5)

# --------------------------------------------------------------------------- comparing


def normal(value: Any) -> Any:
    """A reply as plain comparable data: types made explicit, errors by message, floats by
    repr (so NaN equals NaN and -0.0 differs from 0.0)."""
    if value is None:
        return ("none",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, bytes):
        return ("bytes", value)
    if isinstance(value, (ReplyError, hiredis.ReplyError)):
        return ("error", str(value))
    if isinstance(value, dict):
        return ("map", [(normal(k), normal(v)) for k, v in value.items()])
    if isinstance(value, list):
        kind = "push" if type(value).__name__ == "PushNotification" else type(value).__name__
        return (kind, [normal(item) for item in value])
    raise AssertionError(f"unexpected reply type {type(value)!r}: {value!r}")


def check_types(core: ModuleType, value: Any) -> None:
    """Our replies use our types, never hiredis' look-alikes."""
    if isinstance(value, Exception):
        assert type(value) is ReplyError
    elif isinstance(value, dict):
        for k, v in value.items():
            check_types(core, k)
            check_types(core, v)
    elif isinstance(value, list):
        assert type(value) in (list, core.PushNotification)
        for item in value:
            check_types(core, item)


def drive(reader: Any, pieces: list[bytes], drain: int) -> list[Any]:
    """Feed piece by piece, reading replies until one call says "not yet" (False); then read
    ``drain`` more times. Stops at the first exception, which ends the list."""
    seen: list[Any] = []

    def read(times: int) -> bool:
        for _ in range(times):
            try:
                reply = reader.gets()
            except Exception as exc:  # noqa: BLE001 - recorded and compared
                seen.append(("raised", exc))
                return False
            seen.append(reply)
            if reply is False:
                break
        return True

    for piece in pieces:
        reader.feed(piece)
        if not read(len(piece) + 1):  # every reply takes at least three bytes
            return seen
    read(drain)
    return seen


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


def assert_like_hiredis(core: ModuleType, pieces: list[bytes], drain: int) -> list[Any]:
    ours = drive(core.ReplyParser(), pieces, drain)
    theirs = drive(hiredis.Reader(), pieces, drain)
    if ours and isinstance(ours[-1], tuple):
        exc = ours[-1][1]
        assert isinstance(exc, ProtocolError), repr(exc)
        ours = ours[:-1]
        theirs = theirs[: len(ours)]
    for reply in ours:
        check_types(core, reply)
    assert [normal(r) if not isinstance(r, tuple) else r for r in ours] == [
        normal(r) if not isinstance(r, tuple) else ("raised", type(r[1]).__name__) for r in theirs
    ]
    return ours


# --------------------------------------------------------------------------- valid streams


@given(stream=streams, cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_valid_streams_parse_as_hiredis_does(
    core: ModuleType, stream: list[Any], cuts: list[int]
) -> None:
    data = b"".join(serialise(tree) for tree in stream)
    ours = drive(core.ReplyParser(), split(data, cuts), len(stream) + 1)
    theirs = drive(hiredis.Reader(), split(data, cuts), len(stream) + 1)
    assert not any(isinstance(r, tuple) for r in theirs), theirs  # the stream is valid
    assert [normal(r) for r in ours] == [normal(r) for r in theirs]
    for reply in ours:
        check_types(core, reply)


@given(stream=streams)
def test_valid_streams_fed_one_byte_at_a_time(core: ModuleType, stream: list[Any]) -> None:
    data = b"".join(serialise(tree) for tree in stream)
    pieces = [data[i : i + 1] for i in range(len(data))]
    assert_like_hiredis(core, pieces, len(stream) + 1)


def test_reply_types(core: ModuleType) -> None:
    parser = core.ReplyParser()
    parser.feed(
        b"+OK\r\n-ERR bad\r\n:-7\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*2\r\n:1\r\n-E x\r\n"
        b"%1\r\n+k\r\n:2\r\n~1\r\n:3\r\n,1.5\r\n_\r\n#t\r\n(123\r\n=7\r\ntxt:hey\r\n"
        b">2\r\n+message\r\n:4\r\n|1\r\n+ttl\r\n:5\r\n"
    )
    replies = [parser.gets() for _ in range(16)]
    assert parser.gets() is False
    error, nested = replies[1], replies[6]
    assert isinstance(error, ReplyError) and str(error) == "ERR bad"
    assert nested[0] == 1 and isinstance(nested[1], ReplyError) and str(nested[1]) == "E x"
    assert replies[:6] + replies[7:] == [
        b"OK", error, -7, b"abc", None, None,
        {b"k": 2}, [3], 1.5, None, True, b"123", b"hey", [b"message", 4], [b"ttl", 5],
    ]  # fmt: skip
    # A push is told apart by its type; an attribute is a plain list of pairs, in place.
    assert type(replies[14]) is core.PushNotification and type(replies[15]) is list


def test_incomplete_is_false_and_false_is_false(core: ModuleType) -> None:
    # hiredis answers a RESP3 false with False, which reads as "incomplete": we do too.
    parser = core.ReplyParser()
    assert parser.gets() is False
    parser.feed(b"#f\r\n:1\r\n*2\r\n:1\r\n")
    assert [parser.gets(), parser.gets(), parser.gets()] == [False, 1, False]
    parser.feed(b":2\r\n")
    assert parser.gets() == [1, 2]


def test_each_nan_is_its_own_map_key(core: ModuleType) -> None:
    parser = core.ReplyParser()
    parser.feed(b"%2\r\n,nan\r\n:1\r\n,nan\r\n:2\r\n")
    assert list(parser.gets().values()) == [1, 2]


def test_repeated_map_keys_come_out_as_hiredis_makes_them(core: ModuleType) -> None:
    # hiredis puts each key in with None, then gives the value to the entry inserted last:
    # a repeated key keeps None and its value lands on the key before. Redis never repeats
    # a key; we match hiredis anyway, so swapping parsers can never change an answer.
    parser = core.ReplyParser()
    parser.feed(b"%3\r\n:0\r\n+a\r\n+k\r\n+b\r\n:0\r\n+c\r\n")
    assert list(parser.gets().items()) == [(0, None), (b"k", b"c")]


def test_calls_while_gets_runs_are_refused(core: ModuleType, monkeypatch: Any) -> None:
    # Python code can run in the middle of gets(): here while an error reply is built, in
    # life another thread or a garbage-collector callback. Calling the parser from there
    # must fail cleanly, never touch the buffer being parsed.
    parser, refused = core.ReplyParser(), []

    class Meddling(ReplyError):
        def __init__(self, message: str) -> None:
            super().__init__(message)
            for call in (lambda: parser.feed(b"x" * 100_000), parser.gets):
                try:
                    call()
                except RuntimeError as exc:
                    refused.append(exc)

    monkeypatch.setattr(core, "reply_error", Meddling)  # what the parser builds errors with
    parser.feed(b"*2\r\n-ERR a\r\n$5\r\nhello\r\n")
    reply = parser.gets()
    assert len(refused) == 2
    assert str(reply[0]) == "ERR a" and reply[1] == b"hello"
    assert parser.gets() is False


def test_feed_takes_any_bytes_like_object(core: ModuleType) -> None:
    parser = core.ReplyParser()
    parser.feed(bytearray(b"+a\r\n"))
    parser.feed(memoryview(b"xx+b\r\n")[2:])
    parser.feed(b"")
    assert [parser.gets(), parser.gets(), parser.gets()] == [b"a", b"b", False]
    with pytest.raises(TypeError):
        parser.feed("+c\r\n")


# --------------------------------------------------------------------------- bad input

resp_tokens = st.sampled_from(
    [b"*", b"$", b"%", b"~", b">", b"|", b"=", b":", b",", b"_", b"#", b"(", b"+", b"-",
     b"\r\n", b"\r", b"\n", b"0", b"1", b"2", b"3", b"-1", b"4294967296", b"txt:", b"inf",
     b"-nan", b"1e-400", b".", b"e", b"t", b"f", b"a", b"!", b"?", b"\x00"]
)  # fmt: skip
garbage = st.lists(st.one_of(resp_tokens, st.binary(max_size=3)), max_size=40).map(b"".join)


@settings(max_examples=300)
@given(data=garbage, cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_garbage_raises_protocol_error_or_parses_as_hiredis(
    core: ModuleType, data: bytes, cuts: list[int]
) -> None:
    assert_like_hiredis(core, split(data, cuts), len(data) + 1)


@given(stream=streams, junk=garbage, at=st.integers(0, 10**6))
def test_corrupted_streams(core: ModuleType, stream: list[Any], junk: bytes, at: int) -> None:
    data = b"".join(serialise(tree) for tree in stream)
    at %= len(data) + 1
    assert_like_hiredis(core, [data[:at] + junk + data[at:]], len(data) + len(junk) + 1)


@pytest.mark.parametrize(
    "data",
    [
        b"?\r\n", b"!3\r\nerr\r\n", b":01\r\n", b":-0\r\n", b":+1\r\n",
        b":9223372036854775808\r\n",
        b"$-2\r\n", b"$01\r\n", b"*-2\r\n", b"$3\r\nabcXX", b"=3\r\ntxt\r\n", b"=4\r\ntxtx\r\n",
        b"#x\r\n", b"_x\r\n", b",1_0\r\n", b", 1\r\n", b",+inf\r\n", b",0x10\r\n", b",1e400\r\n",
        b",1e-400\r\n", b"(1a\r\n", b"+a\rb\r\n", b"-a\nb\r\n", b"%1\r\n*1\r\n:1\r\n:2\r\n",
        b"%1\r\n%0\r\n:1\r\n", b"%1\r\n>0\r\n", b",\rinf\r\n",
    ],
)  # fmt: skip
def test_malformed_replies_raise_protocol_error(core: ModuleType, data: bytes) -> None:
    parser = core.ReplyParser()
    parser.feed(data)
    with pytest.raises(ProtocolError):
        parser.gets()
    # The stream cannot be resynchronised: every later call fails too, whatever comes.
    parser.feed(b"+OK\r\n")
    with pytest.raises(ProtocolError):
        parser.gets()


def test_protocol_error_is_ours(core: ModuleType) -> None:
    parser = core.ReplyParser()
    parser.feed(b"?")
    with pytest.raises(ProtocolError) as info:
        parser.gets()
    assert isinstance(info.value, RuntimeError)


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "header",
    [b"$536870913\r\n", b"=536870913\r\n", b"*4294967296\r\n", b"%4294967296\r\n",
     b">9223372036854775807\r\n", b"$99999999999999999999\r\n"],
)  # fmt: skip
def test_declared_lengths_over_the_caps_fail_at_once(core: ModuleType, header: bytes) -> None:
    parser = core.ReplyParser()
    parser.feed(header)
    with pytest.raises(ProtocolError, match="range|bad"):
        parser.gets()


@pytest.mark.parametrize("header", [b"$536870912\r\n", b"*4294967295\r\n", b"%4294967295\r\n"])
def test_declared_lengths_at_the_caps_just_wait(core: ModuleType, header: bytes) -> None:
    # Nothing is allocated for what has not arrived (hiredis pre-sizes the list and runs
    # out of memory on "*4294967295").
    parser = core.ReplyParser()
    parser.feed(header + b":1\r\n")
    assert parser.gets() is False


@pytest.mark.parametrize(
    "line",
    [b":" + b"1" * 22, b"$" + b"1" * 22, b"*" + b"9" * 22, b"," + b"1" * 327, b"#tt", b"_x"],
)
def test_overlong_lines_fail_before_their_end_arrives(core: ModuleType, line: bytes) -> None:
    parser = core.ReplyParser()
    parser.feed(line)
    with pytest.raises(ProtocolError, match="longer"):
        parser.gets()


def test_nesting_is_bounded(core: ModuleType) -> None:
    parser = core.ReplyParser()
    parser.feed(b"*1\r\n" * 64 + b":1\r\n")
    reply = parser.gets()
    for _ in range(64):
        reply = reply[0]
    assert reply == 1
    parser.feed(b"*1\r\n" * 65)
    with pytest.raises(ProtocolError, match="deeper"):
        parser.gets()


# --------------------------------------------------------------------------- big replies


def chunks(data: bytes, low: int, high: int, seed: int = 7) -> Iterator[bytes]:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.randint(low, high)
        yield data[pos : pos + size]
        pos += size


def feed_all(parser: Any, pieces: Iterator[bytes]) -> list[Any]:
    replies = []
    for piece in pieces:
        parser.feed(piece)
        reply = parser.gets()
        while reply is not False:
            replies.append(reply)
            reply = parser.gets()
    return replies


def test_twenty_megabyte_bulk_in_small_feeds(core: ModuleType) -> None:
    body = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    data = b"$%d\r\n%s\r\n+after\r\n" % (len(body), body)
    started = time.perf_counter()
    replies = feed_all(core.ReplyParser(), chunks(data, 1, 64 * 1024))
    elapsed = time.perf_counter() - started
    assert len(replies) == 2 and replies[0] == body and replies[1] == b"after"
    assert elapsed < 10, f"{elapsed:.1f}s for 20 MB"


def test_one_byte_feeds_cost_constant_time(core: ModuleType) -> None:
    # A bulk string and a long array, each fed one byte at a time with a read after every
    # byte: re-scanning what already arrived would make this quadratic (minutes).
    body = b"x" * 200_000
    array = b"*50000\r\n" + b":1\r\n" * 50_000
    data = b"$%d\r\n%s\r\n" % (len(body), body) + array
    started = time.perf_counter()
    replies = feed_all(core.ReplyParser(), (data[i : i + 1] for i in range(len(data))))
    elapsed = time.perf_counter() - started
    assert replies == [body, [1] * 50_000]
    assert elapsed < 10, f"{elapsed:.1f}s for {len(data)} one-byte feeds"


def test_long_line_fed_in_pieces(core: ModuleType) -> None:
    status = b"+" + b"s" * 300_000 + b"\r\n"
    replies = feed_all(core.ReplyParser(), chunks(status, 1, 16))
    assert replies == [status[1:-2]]


def test_pipelined_replies_in_one_feed(core: ModuleType) -> None:
    parser = core.ReplyParser()
    parser.feed(b"".join(b":%d\r\n" % i for i in range(10_000)))
    assert [parser.gets() for _ in range(10_000)] == list(range(10_000))
    assert parser.gets() is False
