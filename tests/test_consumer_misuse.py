"""A careless handler, option or producer never wedges or kills a consumer (issue 10).

Real server, both cores, both shells (the ``shell`` fixture; tests/shells.py runs the same
handlers on the async consumer). Every consumer runs in a thread with a bounded join;
outcomes are read back from Redis.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import time
import warnings
from types import ModuleType
from typing import Any, Callable, Iterator

import pytest
import redis

from omniq_fast import (
    Client,
    Consumer,
    InvalidArgument,
    InvalidOptionType,
    JobCtx,
    MultiConsumer,
    OmniqError,
    consume,
)
from omniq_fast.types import MalformedJob, ReservedJob

from shells import consumer_of, shell_name
from support import job_hash, snapshot, wait_until
from test_consumer import FAST, Running, other, running, state_of, wait_state  # noqa: F401


@pytest.fixture
def client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    with shell(redis_url, _core=core) as c:
        yield c


@pytest.fixture
def sync_client(redis_url: str, core: ModuleType) -> Iterator[Client]:
    """For tests of the blocking consumer alone (each says why)."""
    with Client(redis_url, _core=core) as c:
        yield c


def active_count(r: redis.Redis, queue: str) -> int:
    return int(r.zcard(f"{{{queue}}}:active"))


#: Handler modes: (options, whether the handler is declared async).
MODES = {
    "inline": ({"concurrency": 1}, False),
    "threads": ({"concurrency": 3}, False),
    "async": ({"concurrency": 3}, True),
}


def make_handler(body: Callable[[JobCtx], Any], is_async: bool) -> Callable[[JobCtx], Any]:
    if not is_async:
        return body

    async def handler(ctx: JobCtx) -> Any:
        await asyncio.sleep(0)
        return body(ctx)

    return handler


class Stop(BaseException):
    """A BaseException of the handler's own (as gevent's GreenletExit is)."""


# --------------------------------------------------------------------------- item 8


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    "exc, text",
    [(SystemExit(3), "SystemExit: 3"), (KeyboardInterrupt(), "KeyboardInterrupt: "),
     (Stop("halt"), "Stop: halt")],
    ids=["SystemExit", "KeyboardInterrupt", "BaseException"],
)  # fmt: skip
def test_fatal_exception_fails_the_job_stops_gracefully_and_is_reraised(
    client: Client, r: redis.Redis, qname: str, mode: str, exc: BaseException, text: str
) -> None:
    options, is_async = MODES[mode]
    ids = [client.publish(qname, {"n": i}, max_attempts=1) for i in range(6)]
    bad = ids[2]
    seen: list[str] = []

    def body(ctx: JobCtx) -> None:
        seen.append(ctx.job_id)
        if ctx.job_id == bad:
            raise exc

    run = Running(consumer_of(client, qname, make_handler(body, is_async), **FAST, **options))
    with pytest.raises(type(exc)) as raised:
        run.join(timeout=15)
    assert raised.value is exc
    h = job_hash(r, qname, bad)
    assert h["state"] == "failed" and h["last_error"].partition("\n")[0] == text
    # Stopped gracefully: every job that ran was acked, the rest given back, none active.
    assert active_count(r, qname) == 0
    for job_id in ids:
        state = state_of(r, qname, job_id)
        if job_id == bad:
            continue
        assert state == ("completed" if job_id in seen else "wait"), (job_id, state)
    assert not [t for t in threading.enumerate() if t.name == "omniq-async"]


@pytest.mark.parametrize("mode", list(MODES))
def test_cancelled_error_fails_its_job_only(
    client: Client, r: redis.Redis, qname: str, mode: str
) -> None:
    options, is_async = MODES[mode]
    bad = client.publish(qname, {"n": 0}, max_attempts=1)
    good = client.publish(qname, {"n": 1})

    def body(ctx: JobCtx) -> None:
        if ctx.job_id == bad:
            raise asyncio.CancelledError("gone")

    with running(client, qname, make_handler(body, is_async), **options) as run:
        wait_state(r, qname, bad, "failed")
        wait_state(r, qname, good, "completed")
        assert run.thread.is_alive()  # the consumer goes on
        stats = run.stop()
    assert stats.failed == 1 and stats.succeeded == 1
    assert job_hash(r, qname, bad)["last_error"].partition("\n")[0] == "CancelledError: gone"


def test_fatal_exception_in_one_queue_stops_a_multi_consumer(
    client: Client, r: redis.Redis, qname: str
) -> None:
    other_queue = qname + "b"
    bad = client.publish(qname, {"n": 0}, max_attempts=1)

    def handler(ctx: JobCtx) -> None:
        if ctx.job_id == bad:
            raise SystemExit(2)

    multi = consumer_of(client, [qname, other_queue], handler, **FAST)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            multi.run()
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive(), "the multi-queue consumer did not stop"
    assert len(errors) == 1 and isinstance(errors[0], SystemExit) and errors[0].code == 2
    assert state_of(r, qname, bad) == "failed"


# --------------------------------------------------------------------------- item 11


def async_body(seen: list[str]) -> Callable[[JobCtx], Any]:
    async def body(ctx: JobCtx) -> None:
        await asyncio.sleep(0.001)
        if ctx.payload.get("fail"):
            raise ValueError("inside the coroutine")
        seen.append(ctx.job_id)

    return body


class Awaitable:
    """Not a coroutine: an object with ``__await__``."""

    def __init__(self, seen: list[str], job_id: str) -> None:
        self.seen, self.job_id = seen, job_id

    def __await__(self) -> Any:
        yield from asyncio.sleep(0).__await__()
        self.seen.append(self.job_id)


# The blocking consumer only: plain defs that return awaitables. AsyncConsumer refuses a
# plain def (README, asyncio); its async def returning one is the next test.
@pytest.mark.parametrize("concurrency", [1, 3])
@pytest.mark.parametrize("kind", ["wraps", "returns_coroutine", "returns_awaitable", "partial"])
def test_handler_returning_an_awaitable_is_awaited(
    sync_client: Client, r: redis.Redis, qname: str, concurrency: int, kind: str
) -> None:
    client = sync_client
    seen: list[str] = []
    body = async_body(seen)
    handler: Callable[[JobCtx], Any]
    if kind == "wraps":

        def traced(fn: Callable[[JobCtx], Any]) -> Callable[[JobCtx], Any]:
            @functools.wraps(fn)
            def wrapper(ctx: JobCtx) -> Any:  # a plain def around an async def
                return fn(ctx)

            return wrapper

        handler = traced(body)
    elif kind == "returns_coroutine":
        handler = lambda ctx: body(ctx)  # noqa: E731
    elif kind == "returns_awaitable":
        handler = lambda ctx: Awaitable(seen, ctx.job_id)  # noqa: E731
    else:
        handler = functools.partial(lambda extra, ctx: body(ctx), None)
    ok = [client.publish(qname, {"n": i}) for i in range(4)]
    # An __await__ object has no failing branch.
    failing = "" if kind == "returns_awaitable" else client.publish(
        qname, {"fail": True}, max_attempts=1
    )
    with running(client, qname, handler, concurrency=concurrency) as run:
        for job_id in ok:
            wait_state(r, qname, job_id, "completed")
        if failing:
            wait_state(r, qname, failing, "failed")
        run.stop()
    assert sorted(seen) == sorted(ok)  # acked completed only after the awaitable ran
    if failing:
        assert job_hash(r, qname, failing)["last_error"].partition("\n")[0] == "ValueError: inside the coroutine"


def test_async_handler_returning_an_awaitable_awaits_it(
    client: Client, r: redis.Redis, qname: str
) -> None:
    seen: list[str] = []
    body = async_body(seen)

    async def handler(ctx: JobCtx) -> Any:
        return body(ctx)  # a coroutine handed back, not awaited

    ids = [client.publish(qname, {"n": i}) for i in range(3)]
    with running(client, qname, handler, concurrency=2) as run:
        for job_id in ids:
            wait_state(r, qname, job_id, "completed")
        run.stop()
    assert sorted(seen) == sorted(ids)


# --------------------------------------------------------------------------- item 12

BAD_OPTIONS = [
    ({"handler": None}, InvalidOptionType),
    ({"handler": "not callable"}, InvalidOptionType),
    ({"poll_interval_s": 0}, InvalidArgument),
    ({"poll_interval_s": -1.0}, InvalidArgument),
    ({"poll_interval_s": float("nan")}, InvalidArgument),
    ({"poll_interval_s": float("inf")}, InvalidArgument),
    ({"poll_interval_s": 1e9}, InvalidArgument),
    ({"poll_interval_s": "0.05"}, InvalidOptionType),
    ({"poll_interval_s": True}, InvalidOptionType),
    ({"promote_interval_s": 0.0}, InvalidArgument),
    ({"promote_interval_s": None}, InvalidOptionType),
    ({"reap_interval_s": -0.5}, InvalidArgument),
    ({"heartbeat_interval_s": 0}, InvalidArgument),
    ({"heartbeat_interval_s": "1"}, InvalidOptionType),
    ({"promote_batch": 0}, InvalidArgument),
    ({"promote_batch": 1001}, InvalidArgument),
    ({"promote_batch": 10.0}, InvalidOptionType),
    ({"reap_batch": -1}, InvalidArgument),
    ({"reap_batch": 5000}, InvalidArgument),
    ({"concurrency": 0}, InvalidArgument),
    ({"concurrency": 100_000}, InvalidArgument),
    ({"concurrency": "4"}, InvalidOptionType),
    ({"concurrency": 2.0}, InvalidOptionType),
    ({"prefetch": -1}, InvalidArgument),
    ({"prefetch": 1001}, InvalidArgument),
    ({"prefetch": "10"}, InvalidOptionType),
    ({"max_jobs": 0}, InvalidArgument),
    ({"max_jobs": -3}, InvalidArgument),
    ({"max_jobs": 1.5}, InvalidOptionType),
    ({"ack_delay_s": -0.001}, InvalidArgument),
    ({"ack_delay_s": 3600}, InvalidArgument),
    ({"verbose": 1}, InvalidOptionType),
    ({"verbose": "yes"}, InvalidOptionType),
    ({"drain": None}, InvalidOptionType),
    ({"stop_on_ctrl_c": 0}, InvalidOptionType),
    ({"wake": "false"}, InvalidOptionType),
    ({"logger": None}, InvalidOptionType),
    ({"logger": "stdout"}, InvalidOptionType),
]


@pytest.mark.parametrize(
    "bad, error", BAD_OPTIONS, ids=[f"{k}={v!r}" for (b, _) in BAD_OPTIONS for k, v in b.items()]
)
@pytest.mark.parametrize("entry", ["Consumer", "consume", "client.consume", "MultiConsumer"])
def test_bad_option_is_refused_before_anything_happens(
    client: Client, r: redis.Redis, qname: str, bad: dict[str, Any], error: type, entry: str
) -> None:
    job_id = client.publish(qname, {"n": 1})
    before = snapshot(r, "{" + qname)
    options: dict[str, Any] = {"handler": lambda ctx: None, **FAST, "max_jobs": 1, **bad}
    handler = options.pop("handler")
    started = time.monotonic()
    with pytest.raises(error) as raised:
        if entry == "Consumer":
            consumer_of(client, qname, handler, **options).run()
        elif entry == "consume" and shell_name(client) == "sync":
            consume(client, queue=qname, handler=handler, **options)
        elif entry in ("consume", "client.consume"):  # the async shell has the method only
            client.consume(qname, handler, **options)
        else:
            consumer_of(client, [qname, qname + "b"], handler, **options).run()
    assert time.monotonic() - started < 5
    assert isinstance(raised.value, OmniqError) and isinstance(raised.value, ValueError)
    if error is InvalidOptionType:
        assert isinstance(raised.value, TypeError)
    name = next(iter(bad))
    assert name in str(raised.value)
    assert snapshot(r, "{" + qname) == before  # nothing reserved, nothing written
    assert state_of(r, qname, job_id) == "wait"


def test_logging_logger_and_edge_values_are_accepted(client: Client, qname: str) -> None:
    import logging

    consumer_of(
        client, qname, lambda ctx: None, poll_interval_s=0.001, promote_interval_s=3600,
        reap_interval_s=1, heartbeat_interval_s=None, promote_batch=1000, reap_batch=1,
        concurrency=1024, prefetch=0, max_jobs=None, ack_delay_s=0, verbose=True,
        logger=logging.getLogger("x"), drain=False, stop_on_ctrl_c=False, wake=False,
    )  # fmt: skip


# --------------------------------------------------------------------------- item 15a


# The blocking consumer only: it runs async def handlers on an event loop of its own.
def test_async_consume_closes_its_event_loop(
    sync_client: Client, r: redis.Redis, qname: str
) -> None:
    client = sync_client
    finalized: list[str] = []
    kept: list[Any] = []

    async def ticker() -> Any:
        try:
            while True:
                yield 1
        finally:
            finalized.append("agen")

    async def handler(ctx: JobCtx) -> None:
        gen = ticker()
        await gen.__anext__()  # left suspended: shutdown_asyncgens must finish it
        kept.append(gen)

    for i in range(3):
        client.publish(qname, {"n": i})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            stats = consume(client, queue=qname, handler=handler, max_jobs=1, **FAST)
            assert stats.succeeded == 1
        gc.collect()
    resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert resource == [], [str(w.message) for w in resource]
    assert finalized == ["agen", "agen"]
    assert not [t for t in threading.enumerate() if t.name == "omniq-async"]


# --------------------------------------------------------------------------- item 9b


def bad_job(client: Client, r: redis.Redis, queue: str, field: str, value: Any) -> str:
    job_id = client.publish(queue, {"bad": field}, max_attempts=1)
    key = f"{{{queue}}}:job:{job_id}"
    if value is None:
        r.hdel(key, field)
    else:
        r.hset(key, field, value)
    return job_id


#: (field, value written by hand, what the failure text names); None deletes the field.
MALFORMED = [
    ("timeout_ms", b"1e20", "timeout_ms"),
    ("timeout_ms", b"99999999999999999", "timeout_ms"),
    ("timeout_ms", b"inf", "timeout_ms"),
    ("attempt", b"1e300", "attempt"),
    ("attempt", b"inf", "attempt"),
    ("max_attempts", b"inf", "max_attempts"),
    ("payload", b"\xff\xfe{}", "payload"),
    ("payload", None, "payload is missing"),
    ("gid", b"\xff", "gid"),
]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_malformed_jobs_are_failed_and_the_rest_go_on(
    client: Client, r: redis.Redis, qname: str, concurrency: int
) -> None:
    good = [client.publish(qname, {"n": i}) for i in range(5)]
    bad = {bad_job(client, r, qname, field, value): (field, named)
           for field, value, named in MALFORMED}  # fmt: skip
    good += [client.publish(qname, {"n": i}) for i in range(5, 10)]
    # Lenient reads (PROTOCOL.md §3) are not malformed: NaN or text read as 0.
    lenient = [bad_job(client, r, qname, "timeout_ms", b"nan"),
               bad_job(client, r, qname, "attempt", b"abc")]  # fmt: skip
    seen: list[str] = []
    with running(client, qname, lambda ctx: seen.append(ctx.job_id),
                 concurrency=concurrency) as run:  # fmt: skip
        for job_id in good + lenient:
            wait_state(r, qname, job_id, "completed")
        for job_id, (field, named) in bad.items():
            if field == "max_attempts":  # inf attempts: retried after its backoff
                wait_state(r, qname, job_id, "delayed")
            else:
                wait_state(r, qname, job_id, "failed")
        assert run.thread.is_alive()
        run.stop()
    assert not set(seen) & set(bad)  # no handler ran for a malformed job
    for job_id, (field, named) in bad.items():
        error = r.hget(f"{{{qname}}}:job:{job_id}", "last_error").decode()
        assert error.startswith("MalformedJob: ") and named in error, (field, error)
    assert active_count(r, qname) == 0


def test_a_malformed_backoff_does_not_kill_the_consumer(
    client: Client, r: redis.Redis, qname: str
) -> None:
    # ack_fail answers RETRY with a due time that is not an integer.
    retried = bad_job(client, r, qname, "backoff_ms", b"1e20")
    r.hset(f"{{{qname}}}:job:{retried}", "max_attempts", "3")
    after = client.publish(qname, {"n": 1})

    def handler(ctx: JobCtx) -> None:
        if ctx.job_id == retried:
            raise RuntimeError("try later")

    with running(client, qname, handler) as run:
        wait_state(r, qname, retried, "delayed")
        wait_state(r, qname, after, "completed")
        assert run.thread.is_alive()
        run.stop()


def test_a_job_id_that_is_not_utf8_does_not_kill_the_consumer(
    client: Client, r: redis.Redis, qname: str
) -> None:
    r.rpush(f"{{{qname}}}:wait", b"\xffbad")
    after = client.publish(qname, {"n": 1})
    seen: list[str] = []
    with running(client, qname, lambda ctx: seen.append(ctx.job_id)) as run:
        wait_state(r, qname, after, "completed")
        assert run.thread.is_alive()
        run.stop()
    assert seen == [after]


def test_reserve_many_hands_back_every_lease(
    client: Client, r: redis.Redis, qname: str
) -> None:
    ids = [client.publish(qname, {"n": i}) for i in range(3)]
    key = f"{{{qname}}}:job:"
    r.hset(key + ids[0], "timeout_ms", "1e20")
    r.hset(key + ids[1], "timeout_ms", "nan")  # used to error out of the script half-way
    jobs = client.reserve_many(qname, 10)
    assert [j.job_id for j in jobs] == ids
    assert isinstance(jobs[0], MalformedJob) and "timeout_ms" in jobs[0].problem
    assert type(jobs[1]) is ReservedJob and jobs[1].lock_until_ms > 0
    assert type(jobs[2]) is ReservedJob
    assert active_count(r, qname) == 3  # all leased, none stranded
    results = client.ack_fail_many(qname, jobs, ["x"] * 3)
    assert [res.status for res in results] == ["RETRY"] * 3
    assert active_count(r, qname) == 0


@pytest.mark.parametrize("field", ["backoff_ms", "timeout_ms", "max_attempts", "attempt"])
def test_nan_fields_never_break_a_script(client: Client, r: redis.Redis, qname: str,
                                         field: str) -> None:  # fmt: skip
    job_id = client.publish(qname, {"n": 1}, timeout_ms=50)
    r.hset(f"{{{qname}}}:job:{job_id}", field, "nan")
    jobs = client.reserve_many(qname, 5)
    assert [j.job_id for j in jobs] == [job_id] and type(jobs[0]) is ReservedJob
    client.heartbeat_many(qname, jobs)
    assert client.ack_fail_many(qname, jobs)[0].ok
    assert active_count(r, qname) == 0


@pytest.mark.parametrize(
    "job, problem",
    [
        ([b"J", b"{}", b"1.5e+20", b"1", b"3", b"", b"t"],
         "timeout_ms is out of range: the lease deadline reads '1.5e+20'"),
        ([b"J", b"{}", b"9", b"nan", b"inf", b"", b"t"],
         "attempt is not an integer: 'nan'; max_attempts is not an integer: 'inf'"),
        ([b"J", b"", b"9", b"1", b"3", b"", b"t"],
         "payload is missing (the job hash or its payload was deleted)"),
        ([b"J\xff", b"\xff", b"9", b"1", b"3", b"\xfe", b"t"],
         "job id is not valid UTF-8; payload is not valid UTF-8; gid is not valid UTF-8"),
        ([b"J", b"{}", None, b"1", b"3", [b"x"], b"t"],
         "timeout_ms is out of range: the lease deadline reads NoneType; gid is not text: list"),
    ],
)  # fmt: skip
def test_parse_reserve_batch_reply_marks_malformed_jobs(
    core: ModuleType, job: list[Any], problem: str
) -> None:
    good = [b"K", b'{"a":1}', b"1700000030000", b"2", b"3", b"g", b"tok"]
    jobs = core.parse_reserve_batch_reply([b"JOB", b"2", *job, *good])
    assert jobs[1] == ReservedJob("JOB", "K", '{"a":1}', 1700000030000, 2, 3, "g", "tok")
    assert isinstance(jobs[0], MalformedJob) and jobs[0].problem == problem
    assert jobs[0].lease_token == "t" and jobs[0].job_id.startswith("J")
