"""Bad input: a clear typed error, raised before anything is written."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, Callable, Iterator

import pytest
import redis

from omniq_fast import (
    Client,
    DuplicateJob,
    InvalidArgument,
    Job,
    InvalidKey,
    InvalidPayload,
    InvalidPayloadValue,
    InvalidQueueName,
    OmniqError,
    ReservedJob,
)
from omniq_fast._options import (
    MAX_ATTEMPTS,
    MAX_BACKOFF_MS,
    MAX_EPOCH_MS,
    MAX_GROUP_LIMIT,
    MAX_TIMEOUT_MS,
)
from support import snapshot

#: One option past its bound, and the 10^14 the issue saw break the server's replies.
TOO_BIG = [
    {"max_attempts": MAX_ATTEMPTS + 1},
    {"timeout_ms": MAX_TIMEOUT_MS + 1},
    {"timeout_ms": 10**14},
    {"backoff_ms": MAX_BACKOFF_MS + 1},
    {"backoff_ms": 10**15},
    {"due_ms": MAX_EPOCH_MS + 1},
    {"due_ms": 10**14},
    {"gid": "g", "group_limit": MAX_GROUP_LIMIT + 1},
    {"now_ms_override": MAX_EPOCH_MS + 1},
]


def _when() -> Any:
    import datetime

    return datetime.datetime(2026, 1, 1, 12, 0)


def _model_with_datetime() -> Any:
    import pydantic

    class Event(pydantic.BaseModel):
        name: str
        when: Any

    return Event(name="e", when=_when())


def _dataclass_with_datetime() -> Any:
    from dataclasses import dataclass

    @dataclass
    class Event:
        name: str
        when: Any

    return Event("e", _when())


@pytest.fixture
def client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    """Our client on both shells: the asyncio one must refuse the same input, typed, with
    nothing written (its single publishes are batched, so a bad one must fail alone)."""
    with shell(redis_url, _core=core) as c:
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
        # upper bounds of every numeric publish option, single and many (a bad item late
        # in a list refuses the whole call before its first batch is sent)
        *[(lambda c, kw=kw: c.publish(q, {}, **kw), InvalidArgument) for kw in TOO_BIG],
        *[
            (lambda c, kw=kw: c.publish_many(q, [{}] * 700, batch_size=100, **kw),
             InvalidArgument)
            for kw in TOO_BIG
        ],  # fmt: skip
        *[
            (lambda c, kw=kw: c.publish_many(
                q, [{"i": i} for i in range(700)] + [Job({}, **kw)], batch_size=100),
             InvalidArgument)
            for kw in TOO_BIG if "now_ms_override" not in kw
        ],  # fmt: skip
        (lambda c: c.publish_many(q, [{}] * 300 + [Job({}, job_id="x" * 300)], batch_size=100),
         InvalidArgument),  # fmt: skip
        (lambda c: c.publish_many(q, [{}], retry=-1), InvalidArgument),
        # one rule for a datetime however the payload arrives: refused, naming the path
        (lambda c: c.publish(q, {"a": {"when": _when()}}), InvalidPayload),
        (lambda c: c.publish(q, [1, {"when": _when()}]), InvalidPayload),
        (lambda c: c.publish(q, _model_with_datetime()), InvalidPayload),
        (lambda c: c.publish(q, _dataclass_with_datetime()), InvalidPayload),
        # a job id that exists is not written again (any state; here waiting)
        (lambda c: c.publish(q, {"new": 1}, job_id="keep"), DuplicateJob),
        (lambda c: c.publish(q, {"new": 1}, job_id="keep", due_ms=MAX_EPOCH_MS), DuplicateJob),
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


def test_datetime_refusal_names_the_path(client: Client, qname: str) -> None:
    for payload, path in (
        ({"a": {"when": _when()}}, "$.a.when"),
        ([1, {"when": _when()}], "$[1].when"),
        (_model_with_datetime(), "$.when"),
        (_dataclass_with_datetime(), "$.when"),
    ):
        with pytest.raises(InvalidPayload, match=r"\$") as info:
            client.publish(qname, payload)
        assert path in str(info.value) and "datetime" in str(info.value)


def test_largest_options_stay_integers_on_the_server(client: Client, qname: str) -> None:
    """At every bound the server's replies still parse as integers: a lease at the latest
    time plus the longest timeout, a retry after the longest backoff."""
    client.publish(
        qname, {}, max_attempts=MAX_ATTEMPTS, timeout_ms=MAX_TIMEOUT_MS,
        backoff_ms=MAX_BACKOFF_MS, gid="g", group_limit=MAX_GROUP_LIMIT,
        now_ms_override=MAX_EPOCH_MS,
    )  # fmt: skip
    job = client.reserve(qname, now_ms_override=MAX_EPOCH_MS)
    assert isinstance(job, ReservedJob)
    assert job.lock_until_ms == MAX_EPOCH_MS + MAX_TIMEOUT_MS
    assert client.heartbeat(qname, job.job_id, job.lease_token, now_ms_override=MAX_EPOCH_MS) > 0
    status, due = client.ack_fail(qname, job.job_id, job.lease_token, now_ms_override=MAX_EPOCH_MS)
    assert status == "RETRY" and due == MAX_EPOCH_MS + MAX_BACKOFF_MS


def test_ten_megabyte_payload_round_trip(client: Client, qname: str) -> None:
    payload = {"blob": "é" * (5 * 1024 * 1024), "n": list(range(1000))}
    job_id = client.publish(qname, payload)
    job = client.reserve(qname)
    assert isinstance(job, ReservedJob) and job.job_id == job_id
    assert len(job.payload.encode()) > 10 * 1024 * 1024
    assert client._core.loads_payload(job.payload) == payload
