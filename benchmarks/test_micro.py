"""Micro-benchmarks of the hot path: both twins and the library each one replaces, in one run.

    .venv/bin/pytest benchmarks/test_micro.py --benchmark-only

Each group compares the compiled core (``[cython]``), the pure twin (``[python]``) and the
baseline: redis-py's command packer, hiredis' reader, the stdlib JSON encoder the official
SDK uses. Not collected by the normal test run (``testpaths = ["tests"]``).
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import hiredis
import pytest
from redis.connection import Connection

from omniq_fast import _core_py

N = 1000
SHA = b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
NOW_MS = 1_764_000_000_000


def _payload(i: int) -> dict[str, Any]:
    items = [{"sku": "A-1", "qty": 2}]
    return {"order_id": i, "customer": f"c-{i % 97}", "items": items, "total": 19.5}


PAYLOADS = [_payload(i) for i in range(N)]
# The same orders with an unset field (a None writes null): the check that tells a None's
# null from NaN's must not cost the encoding its fast path.
PAYLOADS_WITH_NONE = [{**p, "coupon": None} for p in PAYLOADS]
JOB_IDS = [_core_py.new_ulid() for _ in range(N)]
# What Client.publish sends: EVALSHA sha 1 anchor job_id payload max_attempts timeout_ms
# backoff_ms now_ms due_ms gid group_limit (ints as ints, as the client passes them).
ENQUEUES = [
    [b"EVALSHA", SHA, b"1", "{orders}:x", JOB_IDS[i], _core_py.dumps_payload(PAYLOADS[i]),
     3, 30000, 5000, NOW_MS + i, 0, "", 0]
    for i in range(N)
]  # fmt: skip


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


# What reserve answers: an array of 8 bulk strings (the script returns strings only).
RESERVE_REPLIES = [
    [b"JOB", JOB_IDS[i].encode(), _core_py.dumps_payload(PAYLOADS[i]), b"%d" % (NOW_MS + 30000),
     b"1", b"3", b"", b"%032x" % i]
    for i in range(N)
]  # fmt: skip
RESERVE_STREAM = b"".join(
    b"*8\r\n" + b"".join(_bulk(item) for item in reply) for reply in RESERVE_REPLIES
)
# Socket-sized pieces, as redis-py reads them (64 KiB).
RESERVE_PIECES = [RESERVE_STREAM[i : i + 65536] for i in range(0, len(RESERVE_STREAM), 65536)]


# --------------------------------------------------------------------------- encoding


@pytest.mark.benchmark(group="encode 1000 EVALSHA enqueues, one by one")
def test_encode_command(benchmark: Any, core: ModuleType) -> None:
    encode = core.encode_command
    out = benchmark(lambda: [encode(args) for args in ENQUEUES])
    assert out[0] == b"".join(Connection().pack_command(*ENQUEUES[0]))


@pytest.mark.benchmark(group="encode 1000 EVALSHA enqueues, one by one")
def test_encode_command_baseline_redis_py(benchmark: Any) -> None:
    pack = Connection().pack_command
    benchmark(lambda: [pack(*args) for args in ENQUEUES])


@pytest.mark.benchmark(group="encode 1000 EVALSHA enqueues, one pipeline")
def test_encode_commands(benchmark: Any, core: ModuleType) -> None:
    out = benchmark(core.encode_commands, ENQUEUES)
    assert out == b"".join(Connection().pack_commands(ENQUEUES))


@pytest.mark.benchmark(group="encode 1000 EVALSHA enqueues, one pipeline")
def test_encode_commands_baseline_redis_py(benchmark: Any) -> None:
    benchmark(Connection().pack_commands, ENQUEUES)


# --------------------------------------------------------------------------- replies


def _read_all(reader: Any) -> list[Any]:
    replies = []
    for piece in RESERVE_PIECES:
        reader.feed(piece)
        reply = reader.gets()
        while reply is not False:
            replies.append(reply)
            reply = reader.gets()
    return replies


@pytest.mark.benchmark(group="parse 1000 reserve replies (RESP)")
def test_reply_parser(benchmark: Any, core: ModuleType) -> None:
    replies = benchmark(lambda: _read_all(core.ReplyParser()))
    assert replies == RESERVE_REPLIES


@pytest.mark.benchmark(group="parse 1000 reserve replies (RESP)")
def test_reply_parser_baseline_hiredis(benchmark: Any) -> None:
    replies = benchmark(lambda: _read_all(hiredis.Reader()))
    assert replies == RESERVE_REPLIES


@pytest.mark.benchmark(group="1000 reserve replies to ReservedJob")
def test_parse_reserve_reply(benchmark: Any, core: ModuleType) -> None:
    parse = core.parse_reserve_reply
    jobs = benchmark(lambda: [parse(reply) for reply in RESERVE_REPLIES])
    assert jobs[7].attempt == 1


# --------------------------------------------------------------------------- payloads, ids


@pytest.mark.benchmark(group="encode 1000 payloads")
def test_dumps_payload(benchmark: Any, core: ModuleType) -> None:
    dumps = core.dumps_payload
    benchmark(lambda: [dumps(p) for p in PAYLOADS])


def _official(payload: Any) -> bytes:
    # What the official SDK does for every payload.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.benchmark(group="encode 1000 payloads")
def test_dumps_payload_baseline_stdlib_json(benchmark: Any) -> None:
    benchmark(lambda: [_official(p) for p in PAYLOADS])


@pytest.mark.benchmark(group="encode 1000 payloads with a None")
def test_dumps_payload_with_none(benchmark: Any, core: ModuleType) -> None:
    dumps = core.dumps_payload
    assert dumps(PAYLOADS_WITH_NONE[0]) == _official(PAYLOADS_WITH_NONE[0])
    benchmark(lambda: [dumps(p) for p in PAYLOADS_WITH_NONE])


@pytest.mark.benchmark(group="encode 1000 payloads with a None")
def test_dumps_payload_with_none_baseline_stdlib_json(benchmark: Any) -> None:
    benchmark(lambda: [_official(p) for p in PAYLOADS_WITH_NONE])


@pytest.mark.benchmark(group="1000 ULIDs")
def test_new_ulid(benchmark: Any, core: ModuleType) -> None:
    new = core.new_ulid
    benchmark(lambda: [new() for _ in range(N)])
