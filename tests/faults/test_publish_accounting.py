"""publish_many under real faults: every id of a sent batch ends in ``written``, ``unknown``
or ``not_written`` (refused before running), and the keyspace, read from outside, agrees.

The check (``Ledger.verify``): the ids that exist — job hashes scanned in the keyspace, plus
the ids a draining consumer ran (completed hashes past the newest 100 are deleted) — must
equal ``written`` plus some of ``unknown``; no written id may be missing; no refused id may
exist. ``unaccounted`` counts the ids breaking it (the number the issue quotes).

The publisher runs on both shells (the ``shell`` fixture): the asyncio publish_many must
account for every id the same way. The draining consumer is a blocking client on both.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any, Iterator

import pytest

from conftest import SCALE
from proxy import FaultProxy
from servers import ServerProcess

from omniq_fast import (
    Client,
    ConnectionLost,
    NoScript,
    OutOfMemory,
    PublishManyError,
    ServerRefused,
    ServerTimeout,
)


class Ledger:
    """What publish_many said, call after call, and the check against the keyspace."""

    def __init__(self) -> None:
        self.written: set[str] = set()
        self.unknown: set[str] = set()
        self.refused: set[str] = set()
        self.errors: list[BaseException] = []

    def publish(self, client: Client, queue: str, jobs: Any, **kw: Any) -> None:
        try:
            self.written.update(client.publish_many(queue, jobs, **kw))
        except PublishManyError as exc:
            self.errors.append(exc)
            self.written.update(exc.written)
            self.unknown.update(exc.unknown)
            self.refused.update(exc.not_written)
            assert not exc.duplicates
        except (ServerRefused, ConnectionLost) as exc:
            # Raised as it is only when nothing of the call was written or is unknown.
            assert not isinstance(exc, ConnectionLost) or not exc.unknown
            self.errors.append(exc)

    def verify(self, admin: Any, queue: str, ran: set[str]) -> int:
        prefix = "{" + queue + "}:job:"
        present = {k.decode()[len(prefix):] for k in admin.scan_iter(match=prefix + "*", count=1000)}
        exists = present | ran
        missing = self.written - exists
        stray = exists - self.written - self.unknown
        refused_present = self.refused & exists
        assert not (self.written & self.unknown) and not (self.refused & self.written)
        unaccounted = len(missing) + len(stray) + len(refused_present)
        assert unaccounted == 0, (
            f"missing {len(missing)}, reported nowhere {len(stray)}, refused but present "
            f"{len(refused_present)}; errors: {self.errors[:3]}"
        )
        return unaccounted


class Drainer:
    """A consumer on its own thread: reserves and acks in batches, logging what it ran."""

    def __init__(self, url: str, queue: str, core: ModuleType) -> None:
        self.client = Client(url, _core=core, cluster=False)
        self.queue = queue
        self.ran: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                jobs = self.client.reserve_many(self.queue, 100)
                if isinstance(jobs, list) and jobs:
                    results = self.client.ack_success_many(self.queue, jobs)
                    self.ran.update(j.job_id for j, r in zip(jobs, results) if r.status == "OK")
                time.sleep(0.01)  # slower than the publisher: memory stays at the limit
            except Exception:
                time.sleep(0.005)  # OOM or a lost connection: the publisher side is tested

    def close(self) -> set[str]:
        self.stop.set()
        self.thread.join(10)
        self.client.close()
        return self.ran


def _jobs(n: int, size: int = 0) -> Iterator[dict[str, Any]]:
    pad = "x" * size
    for i in range(n):
        yield {"i": i, "pad": pad}


def test_publish_many_at_maxmemory_with_a_consumer_draining(
    server: ServerProcess, core: ModuleType, qname: str, shell: Any
) -> None:
    admin = server.admin()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 2_000_000)
    drainer = Drainer(server.url, qname, core)
    ledger = Ledger()
    oom = 0
    try:
        with shell(server.url, _core=core, cluster=False) as client:
            # A few seconds of publishing against the limit while the consumer frees
            # memory: calls end part-way with batches in flight, again and again.
            deadline = time.monotonic() + 4 * SCALE
            while time.monotonic() < deadline:
                errors = len(ledger.errors)
                ledger.publish(client, qname, _jobs(2000, 1000), batch_size=100)
                if len(ledger.errors) > errors:
                    time.sleep(0.02)  # let the consumer free some memory
        oom = sum(
            isinstance(e, OutOfMemory) or isinstance(e.__cause__, OutOfMemory)
            for e in ledger.errors
        )
    finally:
        ran = drainer.close()
    admin.config_set("maxmemory", 0)
    ledger.verify(admin, qname, ran)
    assert oom > 0, "the scenario never reached maxmemory"
    for err in ledger.errors:
        cause = err.__cause__ if isinstance(err, PublishManyError) else err
        if isinstance(cause, OutOfMemory):
            assert cause.code == "OOM" and "maxmemory" in str(cause)
    admin.close()


def test_publish_many_under_script_flush_loop(
    server: ServerProcess, core: ModuleType, qname: str, shell: Any
) -> None:
    admin = server.admin()
    stop = threading.Event()
    flushes = 0

    def flush() -> None:
        nonlocal flushes
        with server.admin() as r:
            while not stop.is_set():
                r.script_flush()
                flushes += 1
                time.sleep(0.001)

    thread = threading.Thread(target=flush, daemon=True)
    thread.start()
    ledger = Ledger()
    try:
        with shell(server.url, _core=core, cluster=False) as client:
            for _ in range(4 * SCALE):
                ledger.publish(client, qname, _jobs(5000), batch_size=100)
    finally:
        stop.set()
        thread.join(10)
    ledger.verify(admin, qname, set())
    assert flushes > 10
    for err in ledger.errors:  # only NOSCRIPT that outlasted the bounded retries
        assert isinstance(err.__cause__ or err, NoScript), err
    # FIFO intact and nothing queued twice
    wait = [i.decode() for i in admin.lrange("{" + qname + "}:wait", 0, -1)]
    assert len(wait) == len(set(wait)) == len(ledger.written)
    admin.close()


@pytest.mark.parametrize("fault", ["reset", "corrupt", "stall"])
@pytest.mark.parametrize("retry", [0, 3])
def test_publish_many_broken_mid_stream(
    server: ServerProcess, proxy: FaultProxy, core: ModuleType, qname: str, fault: str,
    retry: int, shell: Any,
) -> None:  # fmt: skip
    admin = server.admin()
    n, batch = 6000 * SCALE, 200

    def jobs() -> Iterator[dict[str, Any]]:
        for i, job in enumerate(_jobs(n)):
            if i == n // 3:  # a third of the way: the fault hits batches in flight
                if fault == "reset":
                    proxy.reset()
                elif fault == "corrupt":
                    proxy.corrupt_next_reply()
                else:
                    proxy.stall()
                    threading.Timer(1.5, proxy.stall, args=(False,)).start()
            yield job

    ledger = Ledger()
    with shell(proxy.url, _core=core, cluster=False, socket_timeout=1) as client:
        ledger.publish(client, qname, jobs(), batch_size=batch, retry=retry)
    proxy.stall(False)
    ledger.verify(admin, qname, set())
    wait = [i.decode() for i in admin.lrange("{" + qname + "}:wait", 0, -1)]
    assert len(wait) == len(set(wait))  # never queued twice
    if retry:
        # The unknown batches were re-sent (duplicates skipped server-side), then the rest.
        assert not ledger.errors, ledger.errors
        assert len(ledger.written) == n and len(wait) == n
    else:
        (err,) = ledger.errors
        assert isinstance(err, PublishManyError)
        assert isinstance(err.__cause__, ConnectionLost)
        if fault == "stall":
            assert isinstance(err.__cause__, ServerTimeout)
        assert ledger.unknown and len(ledger.written) < n
    admin.close()
