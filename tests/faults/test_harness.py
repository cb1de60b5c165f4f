"""The fault tools themselves: each fault reaches a real client the way it should."""

from __future__ import annotations

import socket
import time

import pytest
import redis

from proxy import FaultProxy
from servers import ServerProcess


def test_proxy_forwards_then_resets(server: ServerProcess, proxy: FaultProxy) -> None:
    r = redis.Redis.from_url(proxy.url, socket_timeout=2)
    assert r.ping()
    assert proxy.reset() == 1
    with pytest.raises(redis.ConnectionError):
        r.execute_command("PING", retry_on_error=[])  # the RST is seen on the next read
    r.close()


def test_proxy_stall_freezes_replies(server: ServerProcess, proxy: FaultProxy) -> None:
    r = redis.Redis.from_url(proxy.url, socket_timeout=0.3, retry_on_timeout=False)
    r.ping()
    proxy.stall()
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        r.set("k", "v")
    assert time.monotonic() - started >= 0.25
    proxy.stall(False)
    r.close()


def test_proxy_refuse_and_cut(server: ServerProcess, proxy: FaultProxy) -> None:
    proxy.refuse()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(proxy.url, socket_timeout=1).ping()
    proxy.heal()
    r = redis.Redis.from_url(proxy.url, socket_timeout=2)
    r.set("big", "x" * 10_000)
    proxy.cut_replies_after(100)
    with pytest.raises(redis.ConnectionError):
        r.get("big")
    # The command ran; only its reply was cut.
    assert server.admin().strlen("big") == 10_000
    r.close()


def test_proxy_corrupts_a_reply(server: ServerProcess, proxy: FaultProxy) -> None:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    proxy.corrupt_next_reply()
    s.sendall(b"PING\r\n")
    assert s.recv(16) == b"\x00PONG\r\n"
    s.close()


def test_aof_restart_keeps_writes(aof_server: ServerProcess) -> None:
    aof_server.admin().set("kept", "1")
    aof_server.restart(down_s=0.1)
    assert aof_server.admin().get("kept") == b"1"
    assert aof_server.starts == 2
