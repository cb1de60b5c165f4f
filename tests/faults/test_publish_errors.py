"""Server refusals and broken connections reach the caller typed, with the server's words,
and a frozen server never hangs a call: on private servers the tests may starve or freeze.

Each test runs on both shells (the ``shell`` fixture): the asyncio client must raise the
same typed errors, with the same codes and the same unknown-effect reports."""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

import pytest
import redis

from proxy import FaultProxy
from servers import ServerProcess

from omniq_fast import (
    AuthenticationFailed,
    Client,
    ConnectionLost,
    InvalidArgument,
    MasterDown,
    OmniqClient,
    OmniqError,
    OutOfMemory,
    ReadOnlyReplica,
    ServerBusy,
    ServerRefused,
    ServerTimeout,
    ServerUnreachable,
    did_not_run,
)
from omniq_fast.testing import free_ports


def _job_keys(admin: redis.Redis, queue: str) -> list[bytes]:
    return list(admin.scan_iter(match="{" + queue + "}*"))


def test_oom_is_typed_with_the_servers_text(
    server: ServerProcess, core: ModuleType, shell: Any
) -> None:
    admin = server.admin()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    with shell(server.url, _core=core) as client:
        with pytest.raises(OutOfMemory) as info:
            client.publish("q", {"a": 1})
        with pytest.raises(OutOfMemory):
            client.publish_many("q", [{"a": 1}] * 10)
    err = info.value
    assert err.code == "OOM" and "maxmemory" in str(err) and err.ran is False
    assert isinstance(err, ServerRefused) and isinstance(err, OmniqError) and did_not_run(err)
    assert isinstance(err, redis.ResponseError)  # what the official SDK lets through
    assert _job_keys(admin, "q") == []  # refused before anything was written
    admin.close()


def test_busy_is_typed(server: ServerProcess, core: ModuleType, shell: Any) -> None:
    admin = server.admin()
    admin.config_set("busy-reply-threshold", 100)  # lua-time-limit on older servers
    slow = threading.Thread(
        target=lambda: server.admin().eval(
            "local t = redis.call('TIME') local s = t[1] + 3 "
            "while tonumber(redis.call('TIME')[1]) < s do end return 1", 0
        ),
        daemon=True,
    )
    slow.start()
    probe = server.admin()
    deadline = time.monotonic() + 5
    while True:  # until the slow script is past its busy threshold
        try:
            probe.ping()
        except redis.ResponseError as exc:
            assert str(exc).startswith("BUSY")
            break
        assert time.monotonic() < deadline, "the slow script never made the server busy"
        time.sleep(0.02)
    probe.close()
    try:
        with shell(server.url, _core=core, cluster=False) as client:
            with pytest.raises(ServerBusy) as info:
                client.publish("q", {"a": 1})
        assert info.value.code == "BUSY" and did_not_run(info.value)
    finally:
        slow.join(10)
    assert _job_keys(admin, "q") == []
    admin.close()


@pytest.mark.parametrize("stale", ["yes", "no"])
def test_replica_refusals_are_typed(
    server: ServerProcess, core: ModuleType, stale: str, shell: Any
) -> None:
    admin = server.admin()
    admin.config_set("replica-serve-stale-data", stale)
    admin.replicaof("127.0.0.1", free_ports(1)[0])  # a master that is not there
    expected = ReadOnlyReplica if stale == "yes" else MasterDown
    try:
        with shell(server.url, _core=core, cluster=False) as client:
            with pytest.raises(expected) as info:
                client.publish("q", {"a": 1})
            assert did_not_run(info.value) and info.value.code in ("READONLY", "MASTERDOWN")
    finally:
        admin.replicaof("NO", "ONE")
    assert _job_keys(admin, "q") == []
    admin.close()


def test_database_out_of_range_is_the_servers_own_error(
    server: ServerProcess, core: ModuleType, shell: Any
) -> None:
    for cluster in (None, False):  # through the first-use probe, and straight to a script
        with shell(server.url[:-2] + "/99", _core=core, cluster=cluster) as client:
            with pytest.raises(InvalidArgument, match="DB index is out of range") as info:
                client.publish("q", {"a": 1})
            assert "Cluster" not in str(info.value)


def test_wrong_or_missing_password_is_typed(core: ModuleType, shell: Any) -> None:
    with ServerProcess(extra=("--requirepass", "s3cret")) as srv:
        base = f"127.0.0.1:{srv.port}/0"
        for url in (f"redis://:wrong@{base}", f"redis://{base}"):
            for cluster in (None, False):
                with shell(url, _core=core, cluster=cluster) as client:
                    with pytest.raises(AuthenticationFailed) as info:
                        client.publish("q", {"a": 1})
                    assert isinstance(info.value, PermissionError)
                    assert isinstance(info.value, OmniqError)
        if shell is Client:  # OmniqClient (the official SDK's drop-in) has no async twin
            with OmniqClient(host="127.0.0.1", port=srv.port, password="wrong", _core=core) as c:
                with pytest.raises(AuthenticationFailed):
                    c.reserve(queue="q")
        with shell(f"redis://:s3cret@{base}", _core=core) as client:
            client.publish("q", {"a": 1})


def test_no_server_is_typed(core: ModuleType, shell: Any) -> None:
    url = f"redis://127.0.0.1:{free_ports(1)[0]}/0"
    for cluster in (None, False):
        with shell(url, _core=core, cluster=cluster) as client:
            with pytest.raises(ServerUnreachable) as info:
                client.publish("q", {"a": 1})
            assert isinstance(info.value, ConnectionError) and isinstance(info.value, OmniqError)
            # The blocking is_cluster probes on first use; the asyncio one is a property
            # (it cannot await), so it only tells what the calls found.
            if cluster is None and shell is Client:
                with pytest.raises(ServerUnreachable):
                    _ = client.is_cluster


def test_frozen_server_times_out_typed(
    server: ServerProcess, core: ModuleType, shell: Any
) -> None:
    with shell(server.url, _core=core, socket_timeout=1, socket_connect_timeout=1) as client:
        client.publish("q", {"a": 1})  # connected and probed
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(ServerTimeout) as info:
                client.publish("q", {"b": 2})
            assert time.monotonic() - started < 10
            assert isinstance(info.value, ConnectionLost) and isinstance(info.value, TimeoutError)
            assert "unknown" in str(info.value)
            # a fresh client: the first-use probe must not hang either
            with shell(server.url, _core=core, socket_timeout=1, socket_connect_timeout=1) as c2:
                started = time.monotonic()
                with pytest.raises(OmniqError):
                    c2.reserve("q")
                assert time.monotonic() - started < 15
        finally:
            server.resume()
        # The publish that timed out ran once the server woke up: its effect was unknown,
        # and nothing re-sent it.
        admin = server.admin()
        assert admin.llen("{q}:wait") == 2
        admin.close()


def test_default_timeouts_bound_a_stalled_call(
    server: ServerProcess, proxy: FaultProxy, core: ModuleType, shell: Any
) -> None:
    with shell(proxy.url, _core=core) as client:
        kwargs = client.redis.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 30.0 and kwargs["socket_connect_timeout"] == 5.0
    with shell(proxy.url + "?socket_timeout=0.5", _core=core) as client:
        client.publish("q", {"a": 1})
        proxy.stall()
        try:
            with pytest.raises(ServerTimeout):
                client.publish("q", {"b": 2})
        finally:
            proxy.stall(False)
