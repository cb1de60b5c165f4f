"""The client API on a real server: shapes, typed errors, connections, NOSCRIPT recovery.

Every test of a client's behaviour runs on both shells (the ``shell`` fixture: ``Client``
and ``AsyncClient`` behind blocking calls): the asyncio client must answer the same calls
with the same results and the same typed errors."""

from __future__ import annotations

import inspect
import uuid
from types import ModuleType
from typing import Any, Iterator

import pytest
import redis

import omniq_fast
from peers import ScriptedServer, scripted  # noqa: F401  (fixture)
from shells import shell_name

from omniq_fast import (
    AdminError,
    AuthenticationFailed,
    BatchResultItem,
    Client,
    ConnectionLost,
    LeaseError,
    NotActive,
    OmniqClient,
    Paused,
    ProtocolError,
    ReservedJob,
    TokenMismatch,
    TokenRequired,
)

NOW = 1_700_000_000_000


@pytest.fixture
def client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    """Our client on the shell under test (a ``BlockingAsync`` on the async leg)."""
    with shell(redis_url, _core=core) as c:
        yield c


def test_publish_reserve_ack_round_trip(client: Client, qname: str) -> None:
    job_id = client.publish(qname, {"hello": "wörld"}, now_ms_override=NOW)
    assert len(job_id) == 26
    job = client.reserve(qname, now_ms_override=NOW + 5)
    assert isinstance(job, ReservedJob)
    assert (job.job_id, job.payload, job.attempt, job.max_attempts, job.gid) == (
        job_id, '{"hello":"wörld"}', 1, 3, "",
    )  # fmt: skip
    assert job.lock_until_ms == NOW + 5 + 30_000
    assert client.heartbeat(qname, job_id, job.lease_token, now_ms_override=NOW + 10) == (
        NOW + 5 + 60_000  # max(current deadline, now) + timeout (PROTOCOL.md §7)
    )
    assert client.ack_success(qname, job_id, job.lease_token, now_ms_override=NOW + 20) is None
    assert client.reserve(qname, now_ms_override=NOW + 30) is None
    assert client.redis.hget(f"{{{qname}}}:job:{job_id}", "state") == b"completed"


def test_ack_fail_returns_retry_then_failed(client: Client, qname: str) -> None:
    job_id = client.publish(qname, [1], max_attempts=2, backoff_ms=100, now_ms_override=NOW)
    job = client.reserve(qname, now_ms_override=NOW)
    assert isinstance(job, ReservedJob)
    assert client.ack_fail(qname, job_id, job.lease_token, error="E: x", now_ms_override=NOW) == (
        "RETRY", NOW + 100,
    )  # fmt: skip
    assert client.promote_delayed(qname, now_ms_override=NOW + 100) == 1
    job = client.reserve(qname, now_ms_override=NOW + 101)
    assert isinstance(job, ReservedJob) and job.attempt == 2
    assert client.ack_fail(qname, job_id, job.lease_token, now_ms_override=NOW + 102) == (
        "FAILED", None,
    )  # fmt: skip
    client.retry_failed(qname, job_id, now_ms_override=NOW + 200)
    assert client.redis.hget(f"{{{qname}}}:job:{job_id}", "attempt") == b"0"


def test_lease_errors_are_typed_runtime_errors(client: Client, qname: str) -> None:
    job_id = client.publish(qname, {})
    job = client.reserve(qname)
    assert isinstance(job, ReservedJob)
    cases = [
        (lambda: client.heartbeat(qname, job_id, ""), TokenRequired, "TOKEN_REQUIRED"),
        (lambda: client.ack_success(qname, job_id, "f" * 40), TokenMismatch, "TOKEN_MISMATCH"),
    ]
    for call, kind, reason in cases:
        with pytest.raises(kind) as info:
            call()
        assert isinstance(info.value, RuntimeError) and isinstance(info.value, LeaseError)
        assert info.value.reason == reason
        assert reason in str(info.value)
    # The job left "active" behind its token's back (reaped): NOT_ACTIVE.
    client.redis.zrem(f"{{{qname}}}:active", job_id)
    with pytest.raises(NotActive) as info:
        client.ack_fail(qname, job_id, job.lease_token)
    assert str(info.value) == "ACK_FAIL failed: NOT_ACTIVE"


def test_admin_errors_carry_their_reason(client: Client, qname: str) -> None:
    job_id = client.publish(qname, {})
    with pytest.raises(AdminError) as info:
        client.retry_failed(qname, "missing")
    assert info.value.reason == "NO_JOB" and isinstance(info.value, RuntimeError)
    with pytest.raises(AdminError) as info:
        client.remove_job(qname, job_id, "failed")
    assert info.value.reason == "LANE_MISMATCH"
    assert client.remove_job(qname, job_id, "wait") == "OK"
    client.childs_init(qname + "c", 2)
    with pytest.raises(AdminError) as info:
        client.childs_init(qname + "c", 2)
    assert info.value.reason == "ALREADY_INIT"


def test_batches_return_one_item_per_id(client: Client, qname: str) -> None:
    ok = client.publish(qname, {})
    items = client.remove_jobs_batch(qname, "wait", [ok, "missing", ""])
    assert items == [
        BatchResultItem(ok, "OK"),
        BatchResultItem("missing", "ERR", "NO_JOB"),
        BatchResultItem("", "ERR", "BAD_JOB_ID"),
    ]
    assert items[0].ok and not items[1].ok
    assert client.retry_failed_batch(qname, []) == []
    assert client.retry_failed_batch(qname, ["missing"]) == [
        BatchResultItem("missing", "ERR", "NO_JOB")
    ]


def test_pause_resume(client: Client, qname: str) -> None:
    client.publish(qname, {})
    assert client.is_paused(qname) is False
    assert client.pause(qname) == "OK"
    assert client.is_paused(qname) is True
    assert client.reserve(qname) == Paused()
    assert client.resume(qname) == 1
    assert client.resume(qname) == 0
    assert isinstance(client.reserve(qname), ReservedJob)


def test_child_counters(client: Client, qname: str) -> None:
    key = qname + "doc"
    client.childs_init(key, 2)
    assert client.child_ack(key, "a") == 1
    assert client.child_ack(key, "a") == 1  # a retried child is not counted twice
    assert client.child_ack(key, "b") == 0
    assert client.child_ack(key, "c") == -1  # counter gone: never a second 0


def test_job_timeout_ms(client: Client, qname: str) -> None:
    job_id = client.publish(qname, {}, timeout_ms=1234)
    assert client.job_timeout_ms(qname, job_id) == 1234
    assert client.job_timeout_ms(qname, "missing") == 0


def test_noscript_recovery(client: Client, qname: str) -> None:
    client.publish(qname, {})
    # Every client reloads on NOSCRIPT (the official SDK too), so flushing is harmless.
    client.redis.script_flush()
    assert isinstance(client.reserve(qname), ReservedJob)
    client.publish(qname, {})
    assert client.redis.llen(f"{{{qname}}}:wait") == 1


def test_after_noscript_the_wake_message_goes_again_after_the_rerun(
    client: Client, r: redis.Redis, qname: str
) -> None:
    """A publish whose EVALSHA answered NOSCRIPT sent its wake message when the job was not
    there yet: a consumer it woke found the queue empty. The wake goes again after the
    re-run (else a consumer without key tracking waits for its poll)."""
    sub = r.pubsub()
    sub.subscribe(f"{{{qname}}}:wake")
    try:
        assert sub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        client.publish(qname, {"n": 1})  # the script is loaded now (it may not have been)
        while sub.get_message(timeout=0.3) is not None:
            pass
        client.redis.script_flush()
        client.publish(qname, {"n": 2})  # NOSCRIPT, load, run again
        got = []
        while (message := sub.get_message(timeout=0.5)) is not None:
            got.append(message["data"])
        assert got == [b"1", b"1"]  # the one before the run, and the one after it
        assert r.llen(f"{{{qname}}}:wait") == 2
    finally:
        sub.close()


def test_existing_redis_with_decoded_responses(redis_url: str, qname: str, shell: Any) -> None:
    # On the async shell the client is given a redis.asyncio twin with the same settings.
    decoded = redis.Redis.from_url(redis_url, decode_responses=True)
    c = shell(redis=decoded)
    job_id = c.publish(qname, {"a": 1})
    job = c.reserve(qname)
    assert isinstance(job, ReservedJob) and job.job_id == job_id
    c.close()
    assert decoded.ping()  # a redis we were given is not ours to close
    decoded.close()


def test_omniq_client_constructor_keywords(redis_url: str, qname: str) -> None:
    r = redis.Redis.from_url(redis_url)
    kw = r.connection_pool.connection_kwargs
    c = OmniqClient(host=kw["host"], port=kw["port"], db=kw.get("db", 0), client_name="ofast")
    c.publish(queue=qname, payload={"x": 1}, job_id="J1")
    job = c.reserve(queue=qname)
    assert isinstance(job, ReservedJob) and job.job_id == "J1"
    c.close()
    r.close()


def test_acl_user_and_password_in_the_url(redis_url: str, qname: str, shell: Any) -> None:
    admin = redis.Redis.from_url(redis_url)
    user, password = "omniqfast" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    kw = admin.connection_pool.connection_kwargs
    # Scripts run under the caller's ACL, so allow commands broadly but only this test's keys.
    admin.acl_setuser(
        user, enabled=True, passwords=["+" + password], keys=["{" + qname + "*"],
        commands=["+@all"],
    )  # fmt: skip
    try:
        url = f"redis://{user}:{password}@{kw['host']}:{kw['port']}/{kw.get('db', 0)}"
        with shell(url) as c:
            c.publish(qname, {})
            assert isinstance(c.reserve(qname), ReservedJob)
        # Typed at the client's boundary: an OmniqError, and the builtin PermissionError.
        with shell(url.replace(password, "wrong")) as c, pytest.raises(AuthenticationFailed):
            c.publish(qname, {})
        with shell(url.replace(password, "wrong"), cluster=False) as c:
            with pytest.raises(PermissionError, match="credentials"):
                c.reserve(qname)
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_omniq_client_is_a_drop_in_for_the_official_signatures() -> None:
    from omniq.client import OmniqClient as Official

    for name, member in vars(Official).items():
        if name.startswith("_") or not callable(member) or name == "ops":
            continue
        ours = getattr(OmniqClient, name, None)
        assert ours is not None, f"OmniqClient lacks {name}"
        theirs_params = inspect.signature(member).parameters
        ours_params = inspect.signature(ours).parameters
        for pname, param in theirs_params.items():
            if pname == "self":
                continue
            assert pname in ours_params, f"{name}() lacks keyword {pname}"
            if param.default is not inspect.Parameter.empty:
                assert ours_params[pname].default == param.default, f"{name}({pname}=...)"
    official_init = inspect.signature(Official.__init__).parameters
    ours_init = inspect.signature(OmniqClient.__init__).parameters
    assert set(official_init) <= set(ours_init)


def test_public_names_have_docstrings() -> None:
    for name in omniq_fast.__all__:
        obj = getattr(omniq_fast, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name} has no docstring"


# --------------------------------------------------------------------------- misbehaving peers


@pytest.mark.parametrize("scripted", [[None]], indirect=True)
def test_connection_lost_during_a_script_is_not_resent(
    scripted: ScriptedServer, core: ModuleType, shell: Any
) -> None:
    with shell(scripted.url, _core=core) as c:
        with pytest.raises(ConnectionLost) as info:
            c.publish("q", {"a": 1})
        assert isinstance(info.value, ConnectionError)
        assert "unknown" in str(info.value)
    assert scripted.evalshas == 1  # sent once, never retried


@pytest.mark.parametrize(
    "scripted",
    [[reply] * 3 for reply in (b"*1\r\n$5\r\nWHAT?\r\n", b":7\r\n",
                                b"*2\r\n$3\r\nERR\r\n$9\r\nNEW_THING\r\n")],
    indirect=True,
)
def test_malformed_replies_raise_protocol_errors(
    scripted: ScriptedServer, core: ModuleType, shell: Any
) -> None:
    with shell(scripted.url, _core=core) as c:
        with pytest.raises((ProtocolError, AdminError)):
            c.reserve("q")
        with pytest.raises((ProtocolError, AdminError)):
            c.retry_failed_batch("q", ["a"])
        with pytest.raises(Exception) as info:
            c.publish("q", {})
        assert isinstance(info.value, (ProtocolError, omniq_fast.ScriptError))


def test_invalid_input_never_reaches_the_server(core: ModuleType, shell: Any) -> None:
    # Port 9 (discard) on loopback has no server: any network use would raise
    # ConnectionError, so a ValueError/TypeError proves the check came first.
    c = shell("redis://127.0.0.1:9/0", _core=core, socket_connect_timeout=0.2)
    calls: list[Any] = [
        lambda: c.publish("bad name", {}),
        lambda: c.publish("q", "text"),
        lambda: c.publish("q", {"x": float("nan")}),
        lambda: c.reserve("q:x"),
        lambda: c.remove_job("q", "id", "nope"),
        lambda: c.remove_jobs_batch("q", "wait", ["a"] * 101),
        lambda: c.retry_failed_batch("q", ["a"] * 101),
        lambda: c.childs_init("{k}", 1),
        lambda: c.childs_init("k", 0),
        lambda: c.promote_delayed("q", max_promote=0),
    ]
    try:
        for call in calls:
            with pytest.raises((ValueError, TypeError)):
                call()
    finally:
        c.close()


def test_a_standalone_server_is_not_taken_for_a_cluster(redis_url: str, shell: Any) -> None:
    import redis.asyncio as aioredis

    with shell(redis_url) as c:
        assert c.is_cluster is False
        plain = c.redis if shell_name(c) == "sync" else c.aclient.redis
        assert isinstance(plain, redis.Redis if shell_name(c) == "sync" else aioredis.Redis)


def test_cluster_redirections_are_recognised() -> None:
    from omniq_fast._cluster import redirect_of
    from omniq_fast.errors import ReplyError

    assert redirect_of(ReplyError("MOVED 3999 127.0.0.1:7001")) == ("MOVED", "127.0.0.1:7001")
    assert redirect_of(ReplyError("ASK 3999 10.0.0.2:7002")) == ("ASK", "10.0.0.2:7002")
    assert redirect_of(ReplyError("TRYAGAIN Multiple keys request during rehashing")) == (
        "TRYAGAIN", "")
    assert redirect_of(ReplyError("CLUSTERDOWN The cluster is down")) == ("CLUSTERDOWN", "")
    assert redirect_of(ReplyError("ERR unknown command")) is None
    assert redirect_of(b"MOVED 1 x:1") is None  # only error replies redirect


# --------------------------------------------------------------------------- idempotent publish


def test_publish_is_idempotent_by_job_id_in_every_state(
    client: Client, r: redis.Redis, qname: str
) -> None:
    from omniq_fast import DuplicateJob
    from support import snapshot

    prefix = "{" + qname + "}"

    def refused(job_id: str) -> None:
        before = snapshot(r, prefix)
        with pytest.raises(DuplicateJob) as info:
            client.publish(qname, {"again": True}, job_id=job_id, gid="other")
        assert info.value.job_id == job_id and info.value.reason == "DUPLICATE"
        assert isinstance(info.value, ValueError)
        assert snapshot(r, prefix) == before  # nothing written, stats untouched

    client.publish(qname, {"n": 1}, job_id="waiting")
    client.publish(qname, {"n": 2}, job_id="delayed", due_ms=NOW * 2)
    client.publish(qname, {"n": 3}, job_id="done")
    client.publish(qname, {"n": 4}, job_id="bad", max_attempts=1)
    refused("waiting")
    refused("delayed")
    leases = {}
    for _ in range(3):
        job = client.reserve(qname)
        assert isinstance(job, ReservedJob)
        leases[job.job_id] = job
    refused("done")  # active
    client.ack_success(qname, "done", leases["done"].lease_token)
    client.ack_fail(qname, "bad", leases["bad"].lease_token, error="x")
    refused("done")  # completed
    refused("bad")  # failed
    # Once its hash is gone (removed here), the id may be used again.
    client.remove_job(qname, "bad", "failed")
    assert client.publish(qname, {"n": 5}, job_id="bad") == "bad"


def test_publish_many_reports_duplicates_per_item(
    client: Client, r: redis.Redis, qname: str
) -> None:
    from omniq_fast import DuplicateJobs, Job, OmniqError

    client.publish(qname, {"first": True}, job_id="old")
    jobs = [Job({"i": i}, job_id=f"j{i}") for i in range(5)]
    jobs += [Job({"dup": 1}, job_id="old"), Job({"dup": 2}, job_id="j1"), Job({"i": 9})]
    with pytest.raises(DuplicateJobs) as info:
        client.publish_many(qname, jobs, batch_size=3)
    err = info.value
    assert isinstance(err, OmniqError) and isinstance(err, ValueError)
    assert err.duplicates == ["old", "j1"]
    assert err.written[:5] == [f"j{i}" for i in range(5)] and len(err.written) == 6
    assert not err.unknown and not err.not_written
    wait = [i.decode() for i in r.lrange("{" + qname + "}:wait", 0, -1)]
    assert wait == ["old", *err.written]  # every id queued once, in order
    assert r.hget("{" + qname + "}:job:old", "payload") == b'{"first":true}'
    assert int(r.hget("{" + qname + "}:stats", "waiting")) == 7


def test_omniq_client_publish_raises_duplicate_job(redis_url: str, qname: str) -> None:
    from omniq_fast import DuplicateJob

    with OmniqClient(redis=redis.Redis.from_url(redis_url)) as c:
        assert c.publish(queue=qname, payload={"a": 1}, job_id="same") == "same"
        with pytest.raises(DuplicateJob):
            c.publish(queue=qname, payload={"a": 2}, job_id="same")
