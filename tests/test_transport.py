"""The transport against a scripted peer: broken connections mid-stream lose track of nothing."""

from __future__ import annotations

import time
from types import ModuleType

import pytest

from omniq_fast import Client, ConnectionLost, PublishManyError, ReplyError
from peers import ScriptedServer, scripted  # noqa: F401  (fixture)

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
