"""Bad input: a clear typed error, raised before anything is written."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, Callable, Iterator

import pytest
import redis

from omniq_fast import (
    Client,
    InvalidArgument,
    InvalidKey,
    InvalidPayload,
    InvalidPayloadValue,
    InvalidQueueName,
    OmniqError,
    ReservedJob,
)
from support import snapshot


@pytest.fixture
def client(redis_url: str, core: ModuleType) -> Iterator[Client]:
    with Client(redis_url, _core=core) as c:
        yield c


BAD_QUEUE_NAMES = [
    "",
    " q",
    "q ",
    "a:b",
    "a{b",
    "a}b",
    "a b",
    "a/b",
    "q\n",
    "é",
    "x" * 129,
    None,
    b"bytes",
    7,
]


@pytest.mark.parametrize("name", BAD_QUEUE_NAMES, ids=repr)
def test_every_class_of_invalid_queue_name(client: Client, r: redis.Redis, name: Any) -> None:
    for call in (
        lambda: client.publish(name, {}),
        lambda: client.reserve(name),
        lambda: client.pause(name),
        lambda: client.is_paused(name),
        lambda: client.remove_job(name, "id", "wait"),
    ):
        with pytest.raises(InvalidQueueName) as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, OmniqError)
    if isinstance(name, str) and name:
        assert snapshot(r, "{" + name) == {}


def test_longest_valid_queue_name(client: Client, qname: str) -> None:
    name = qname + "x" * (128 - len(qname))
    client.publish(name, {})
    assert isinstance(client.reserve(name), ReservedJob)


def publish_cases(q: str) -> list[tuple[Callable[[Client], Any], type[Exception]]]:
    return [
        (lambda c: c.publish(q, "text"), InvalidPayload),
        (lambda c: c.publish(q, 42), InvalidPayload),
        (lambda c: c.publish(q, None), InvalidPayload),
        (lambda c: c.publish(q, b"{}"), InvalidPayload),
        (lambda c: c.publish(q, {"x": math.nan}), InvalidPayloadValue),
        (lambda c: c.publish(q, [math.inf]), InvalidPayloadValue),
        (lambda c: c.publish(q, {1: "non-string key"}), InvalidPayload),
        (lambda c: c.publish(q, {"set": {1}}), InvalidPayload),
        (lambda c: c.publish(q, {}, max_attempts=0), InvalidArgument),
        (lambda c: c.publish(q, {}, timeout_ms=0), InvalidArgument),
        (lambda c: c.publish(q, {}, timeout_ms=-5), InvalidArgument),
        (lambda c: c.publish(q, {}, backoff_ms=-1), InvalidArgument),
        (lambda c: c.publish(q, {}, due_ms=-1), InvalidArgument),
        (lambda c: c.publish(q, {}, gid="g", group_limit=-1), InvalidArgument),
        (lambda c: c.publish(q, {}, group_limit=2), InvalidArgument),  # a limit needs a group
        (lambda c: c.publish(q, {}, max_attempts=True), InvalidArgument),
        (lambda c: c.publish(q, {}, timeout_ms=1.5), InvalidArgument),
        (lambda c: c.publish(q, {}, job_id="x" * 300), InvalidArgument),
        (lambda c: c.publish(q, {}, job_id=5), InvalidArgument),
        (lambda c: c.publish(q, {}, now_ms_override=-1), InvalidArgument),
        (lambda c: c.promote_delayed(q, max_promote=0), InvalidArgument),
        (lambda c: c.reap_expired(q, max_reap=-1), InvalidArgument),
        (lambda c: c.remove_job(q, "id", "active"), InvalidArgument),
        (lambda c: c.remove_job(q, "id", "nope"), InvalidArgument),
        (lambda c: c.remove_jobs_batch(q, "bogus", ["a"]), InvalidArgument),
        (lambda c: c.remove_jobs_batch(q, "wait", ["a"] * 101), InvalidArgument),
        (lambda c: c.retry_failed_batch(q, ["a"] * 101), InvalidArgument),
        (lambda c: c.retry_failed_batch(q, "abc"), InvalidArgument),
        (lambda c: c.retry_failed_batch(q, [1, 2]), InvalidArgument),
        (lambda c: c.childs_init(q + "k", 0), InvalidArgument),
        (lambda c: c.childs_init(q + "k", -3), InvalidArgument),
        (lambda c: c.childs_init("", 1), InvalidKey),
        (lambda c: c.childs_init("a{b", 1), InvalidKey),
        (lambda c: c.childs_init("k" * 129, 1), InvalidKey),
        (lambda c: c.child_ack("", "x"), InvalidKey),
        (lambda c: c.child_ack(q + "k", ""), InvalidArgument),
    ]


@pytest.mark.parametrize("case", range(len(publish_cases("q"))))
def test_bad_arguments_raise_typed_errors_and_write_nothing(
    client: Client, r: redis.Redis, qname: str, case: int
) -> None:
    client.publish(qname, {"existing": True}, job_id="keep")
    before = snapshot(r, "{" + qname, "{cc:" + qname)
    call, kind = publish_cases(qname)[case]
    with pytest.raises(kind) as info:
        call(client)
    assert isinstance(info.value, (ValueError, TypeError)) and isinstance(info.value, OmniqError)
    assert str(info.value)  # a message that says what was wrong
    assert snapshot(r, "{" + qname, "{cc:" + qname) == before


def test_ten_megabyte_payload_round_trip(client: Client, qname: str) -> None:
    payload = {"blob": "é" * (5 * 1024 * 1024), "n": list(range(1000))}
    job_id = client.publish(qname, payload)
    job = client.reserve(qname)
    assert isinstance(job, ReservedJob) and job.job_id == job_id
    assert len(job.payload.encode()) > 10 * 1024 * 1024
    assert client._core.loads_payload(job.payload) == payload
