"""The transport against a scripted peer: broken connections mid-stream lose track of nothing."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from types import ModuleType
from typing import Any

import pytest
import redis

from omniq_fast import (
    Client, ConnectionLost, DuplicateJob, PublishManyError, ReplyError, ReservedJob,
)  # fmt: skip
from omniq_fast import now_ms
from omniq_fast._protocol import calls
from omniq_fast._scripts import script
from omniq_fast.keys import queue_anchor
from peers import ScriptedServer, scripted  # noqa: F401  (fixture)
from support import wait_until

OK_BATCH = b"*2\r\n$2\r\nOK\r\n$1\r\n5\r\n"


@pytest.mark.parametrize("scripted", [[OK_BATCH] * 3 + [None]], indirect=True)
def test_broken_stream_reports_written_and_unknown_ids(
    scripted: ScriptedServer, core: ModuleType
) -> None:
    with Client(scripted.url, _core=core) as c:
        with pytest.raises(PublishManyError) as info:
            c.publish_many("q", ({"i": i} for i in range(50)), batch_size=5)
    err = info.value
    assert isinstance(err.__cause__, ConnectionLost)
    # Three batches answered OK; the fourth broke the connection with the fifth (window 2)
    # possibly on the wire too: their outcome is unknown; the rest was never sent.
    assert len(err.written) == 15
    assert 5 <= len(err.unknown) <= 10
    assert not set(err.written) & set(err.unknown)
    assert scripted.evalshas == 4


@pytest.mark.parametrize("scripted", [[None]], indirect=True)
def test_broken_single_call_is_connection_lost(scripted: ScriptedServer, core: ModuleType) -> None:
    with Client(scripted.url, _core=core) as c:
        with pytest.raises(ConnectionLost) as info:
            c.ack_success_many("q", [("a", "t")])
    assert "unknown" in str(info.value)


@pytest.mark.parametrize(
    "scripted", [[b"-ERR something broke\r\n", b"*1\r\n$5\r\nWHAT?\r\n"]], indirect=True
)
def test_error_and_malformed_batch_replies(scripted: ScriptedServer, core: ModuleType) -> None:
    with Client(scripted.url, _core=core) as c:
        with pytest.raises(ReplyError, match="something broke"):
            c.reserve_many("q", 3)
        with pytest.raises(Exception) as info:
            c.reserve_many("q", 3)
        assert type(info.value).__name__ == "ProtocolError"


def test_clients_on_a_shared_pool_give_its_connections_back(redis_url: str, qname: str) -> None:
    """A client holds one connection for its single calls; on a ``redis=`` client it is
    not the pool's owner, so close() (or, for a client never closed, garbage collection)
    must hand that connection back: a bounded pool would run dry otherwise."""
    import gc

    import redis

    shared = redis.Redis.from_url(redis_url, max_connections=3)
    try:
        for i in range(10):  # more clients than the pool has connections
            with Client(redis=shared) as c:
                assert c.is_paused(qname) is False
        for i in range(10):
            c = Client(redis=shared)
            c.is_paused(qname)
            del c
            gc.collect()
        assert shared.ping()
        pool = shared.connection_pool
        assert len(pool._in_use_connections) == 0
    finally:
        shared.close()


def test_a_held_connection_the_server_closed_is_not_used(redis_url: str, qname: str) -> None:
    """The connection kept for single calls is checked before reuse: one the server closed
    meanwhile (CLIENT KILL, a timeout, a restart) is replaced, and the call runs, instead
    of being sent into a dead socket and reported with an unknown outcome."""
    import redis

    admin = redis.Redis.from_url(redis_url)
    with Client(redis_url, client_name="held-" + qname) as c:
        c.publish(qname, {"i": 0})
        killed = 0
        for entry in admin.client_list():
            if entry.get("name") == "held-" + qname:
                admin.client_kill_filter(_id=entry["id"])
                killed += 1
        assert killed >= 1
        time.sleep(0.05)  # the server's close reaches our socket
        assert c.publish(qname, {"i": 1})  # not ConnectionLost: the dead socket was noticed
    assert admin.llen("{" + qname + "}:wait") == 2
    admin.close()


@pytest.mark.parametrize("given", [False, True], ids=["own-pool", "given-pool"])
def test_threads_publishing_through_one_client_each_get_their_own_replies(
    redis_url: str, qname: str, core: ModuleType, given: bool
) -> None:
    """One client shared by many threads, each call on a connection of its own (kept out
    of the pool between calls). Every reply must reach the thread that sent its command: each
    thread publishes, publishes the same id again (DUPLICATE), and reserves from a queue of
    its own (the job it just queued, payload and all), so a crossed reply shows."""
    threads, rounds = 8, 120
    barrier = threading.Barrier(threads)
    failures: list[BaseException] = []

    def work(t: int) -> None:
        queue = f"{qname}-{t}"
        try:
            barrier.wait()
            for i in range(rounds):
                job_id = f"{t}-{i}"
                assert c.publish(queue, {"t": t, "i": i}, job_id=job_id) == job_id
                with pytest.raises(DuplicateJob):
                    c.publish(queue, {"t": t, "i": i}, job_id=job_id)
                job = c.reserve(queue)
                assert isinstance(job, ReservedJob), job
                assert (job.job_id, json.loads(job.payload)) == (job_id, {"t": t, "i": i})
                if i % 2:  # plain reads and acks in between: other reply shapes
                    assert c.is_paused(queue) is False
                    c.ack_success(queue, job.job_id, job.lease_token)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    shared = redis.Redis.from_url(redis_url)
    with (Client(redis=shared, _core=core) if given else Client(redis_url, _core=core)) as c:
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not failures, failures[0]
        pool = c.redis.connection_pool
        # Out of the pool: the connections kept for the next calls, at most one a thread
        # (one in all on a pool the caller's own code shares).
        assert 1 <= len(pool._in_use_connections) <= (1 if given else threads)
    if given:  # close() gave the connection back to the pool it was given
        assert len(pool._in_use_connections) == 0
    shared.close()
    r = redis.Redis.from_url(redis_url)
    for t in range(threads):
        assert int(r.zcard("{" + f"{qname}-{t}" + "}:active")) == rounds // 2
    r.close()


def test_a_forked_child_does_not_use_the_parents_kept_connections(
    redis_url: str, qname: str, core: ModuleType
) -> None:
    """After a fork the child must open its own connection: writing to the parent's
    socket would interleave both processes' commands and replies."""
    with Client(redis_url, _core=core) as c:
        c.publish(qname, {"i": 0})
        transport = c._engine.transport
        assert transport is not None and transport._idle
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            code = 1
            try:
                if not transport._idle and c.publish(qname, {"i": 1}):
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        assert c.publish(qname, {"i": 2})  # the parent's own connection still works
    r = redis.Redis.from_url(redis_url)
    assert r.llen("{" + qname + "}:wait") == 3
    r.close()


def test_a_kept_connection_closed_under_it_is_replaced(redis_url: str, qname: str) -> None:
    """redis-py's pool may close every connection, the kept ones too (``disconnect()``): its
    socket is then closed and its descriptor number may already name another file, so the
    next call must notice and connect afresh (nothing was sent, so no unknown outcome)."""
    with Client(redis_url) as c:
        c.publish(qname, {"i": 0})
        c.redis.connection_pool.disconnect()
        spare = socket.socket()  # likely to take the closed socket's descriptor number
        try:
            assert c.publish(qname, {"i": 1})
        finally:
            spare.close()
    r = redis.Redis.from_url(redis_url)
    assert r.llen("{" + qname + "}:wait") == 2
    r.close()


@pytest.mark.parametrize("socket_timeout", [30.0, None], ids=["timeout", "blocking"])
def test_a_command_larger_than_the_socket_buffer_is_sent_whole(
    redis_url: str, qname: str, socket_timeout: float | None
) -> None:
    """A write takes what fits the socket's buffer; the rest must follow (with a timeout
    the socket does not block, so the first write is partial)."""
    text = "x" * (12 << 20)
    with Client(redis_url, socket_timeout=socket_timeout) as c:
        c.publish(qname, {"big": text, "i": 0})
        c.publish(qname, {"big": text, "i": 1})  # the kept connection, reused
        jobs = [c.reserve(qname), c.reserve(qname)]
    assert [json.loads(j.payload) for j in jobs if isinstance(j, ReservedJob)] == [
        {"big": text, "i": 0}, {"big": text, "i": 1},
    ]  # fmt: skip


def test_a_connection_in_use_when_the_client_closes_goes_back_to_the_pool(
    redis_url: str, qname: str
) -> None:
    """close() gives the kept connections back at once; one a call (another thread's) is
    using then goes back to the pool when that call ends, not into the kept ones."""
    shared = redis.Redis.from_url(redis_url)
    c = Client(redis=shared)
    c.publish(qname, {"i": 0})
    transport = c._engine.transport
    assert transport is not None
    wire = transport._checkout()  # as a call in flight holds it
    c.close()
    transport._checkin(wire, True)
    assert not transport._idle
    assert len(shared.connection_pool._in_use_connections) == 0
    shared.close()


def test_the_portable_wire_sends_and_peeks_without_poll(
    redis_url: str, qname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where sockets are no files and select.poll is missing (Windows), the wire sends
    with sendall and peeks with select: the same calls, and a killed connection is still
    noticed before it is reused."""
    from omniq_fast import _transport

    monkeypatch.setattr(_transport, "_POSIX", False)
    admin = redis.Redis.from_url(redis_url)
    with Client(redis_url, client_name="portable-" + qname) as c:
        assert c.publish(qname, {"i": 0})
        for entry in admin.client_list():
            if entry.get("name") == "portable-" + qname:
                admin.client_kill_filter(_id=entry["id"])
        time.sleep(0.05)  # the server's close reaches our socket
        assert c.publish(qname, {"i": 1})
    assert admin.llen("{" + qname + "}:wait") == 2
    admin.close()


def _reserve(core: ModuleType, queue: str, n: int) -> tuple[Any, bytes]:
    s = script("reserve_batch")
    return s, calls.evalsha(core, s, queue_anchor(queue), now_ms(), n)


def test_calls_written_ahead_are_read_in_order_on_one_connection(
    redis_url: str, qname: str, core: ModuleType
) -> None:
    """send_many(after=...) writes behind calls not read yet, on their connection: the
    replies come back to the right caller, and the connection is kept once all are read."""
    with Client(redis_url, _core=core) as c:
        ids = [c.publish(qname, {"i": i}) for i in range(3)]
        transport = c._engine.transport
        assert transport is not None
        first = transport.send_many([_reserve(core, qname, 1)])
        second = transport.send_many([_reserve(core, qname, 2)], after=first)
        assert second._line is first._line  # one connection, written in order
        wire = first._line.wire
        wait_until(first.answered, "the first reply", 5)
        assert not second.answered()  # not before the first is read
        (one,) = first.result()
        (two,) = second.result()
        assert [j.job_id for j in core.parse_reserve_batch_reply(one)] == ids[:1]
        assert [j.job_id for j in core.parse_reserve_batch_reply(two)] == ids[1:]
        assert wire in transport._idle  # given back, healthy


def test_a_connection_killed_under_calls_written_ahead_fails_the_unread_ones(
    redis_url: str, r: redis.Redis, qname: str, core: ModuleType
) -> None:
    with Client(redis_url, _core=core) as c:
        c.publish(qname, {"i": 0})
        transport = c._engine.transport
        assert transport is not None
        first = transport.send_many([_reserve(core, qname, 1)])
        wait_until(first.answered, "the first reply", 5)  # in our socket's buffer
        wire = first._line.wire
        assert wire is not None
        host, port = wire.sock.getsockname()[:2]
        assert r.client_kill(f"{host}:{port}")
        time.sleep(0.05)
        try:
            second = transport.send_many([_reserve(core, qname, 1)], after=first)
        except ConnectionLost:
            second = None  # the write itself failed: as good, its effect is unknown
        (one,) = first.result()  # its reply had come before the kill
        assert core.parse_reserve_batch_reply(one)[0].attempt == 1
        if second is not None:
            with pytest.raises(ConnectionLost):
                second.result()
        assert wire not in transport._idle  # the dead connection is not kept
        assert c.publish(qname, {"i": 1})  # a fresh connection serves the next call


def test_abandoned_calls_close_their_connection(
    redis_url: str, qname: str, core: ModuleType
) -> None:
    with Client(redis_url, _core=core) as c:
        transport = c._engine.transport
        assert transport is not None
        pending = transport.send_many([_reserve(core, qname, 1)])
        wire = pending._line.wire
        assert wire is not None
        pending.abandon()
        assert pending.answered() and wire not in transport._idle
        assert wire.sock.fileno() == -1 or wire.conn._sock is None
