"""Failover under load: a master is SIGKILLed while its queues work, its replica takes over.

The module starts a cluster of its own (3 masters, 1 replica each), since it kills a node.
Six queues, three on the victim master and one or two on each of the others, get jobs from
two producers (``publish_many_queues``, and single ``publish`` calls through a client with
``cluster_retry_s=0.05``, so that the outage makes them raise ``ClusterUnavailable``) and
are consumed by one :class:`~omniq_fast.MultiConsumer`. Then:

1. after a warm-up, and a burst of jobs on the victim's queues, the producers stop
   sending to the victim's queues: the *fence*. The job states on the victim are read, then
   ``INCR`` of a key on the victim and ``WAIT 1 2000`` are sent on one connection. WAIT
   counts the replicas that acknowledged that connection's own last write (a WAIT on a
   connection that wrote nothing returns at once), so the write comes first; once WAIT
   answers 1, every write the victim made before the INCR, the states just read included,
   is on its replica;
2. the producers send to the victim's queues again, another burst lands there, and while
   the consumer works through it the victim is SIGKILLed;
   :meth:`~omniq_fast.testing.EmbeddedCluster.failover` promotes its replica
   (``CLUSTER FAILOVER TAKEOVER``);
3. load goes on; then everything is drained.

The client follows by itself: the test never reconnects. During the outage the consumer
backs off on ``ConnectionLost`` / ``ClusterUnavailable``; the producers send again what
raised ``ClusterUnavailable`` (it means the call did not run) and the ids of a
``PublishManyError`` that were never sent, but record a ``ConnectionLost`` or an ``unknown``
id as *unknown outcome* and never send it again.

The bound. Replication is asynchronous: a write the master acknowledged is on the replica
only once the replica has received it, so the failover can lose what the victim did after
the fence. What this test asserts, exactly:

* a job completed on the victim at the fence (its hash says ``completed``, or is gone:
  trimmed from the 100 kept completions) is still completed on the promoted replica, and
  its handler never runs again;
* a job published to the victim before the fence still exists on the promoted replica (or
  has already run: it may have been completed and trimmed since), and runs to success;
* a job whose publish call started after the kill (it ran on the promoted replica) runs,
  and a job published after the failover runs exactly once;
* queues on the other masters are not disturbed: each of their jobs runs exactly once;
* every queue's stats agree with its lanes at the end (the replica's copy is a consistent
  state: a script's effects replicate atomically), and no job ended ``failed``.

Not asserted, only counted and printed: jobs published between the fence and the kill may
be lost (the client was told OK), and acks or reserves after the fence may be undone, so
their jobs run again once their 2 s lease expires or they are reserved anew (at-least-once;
the consumer re-sends the acks of a round trip that broke, which saves most of them).
Unknown-outcome publishes may or may not exist. On loopback the replica is normally a
fraction of a millisecond behind, so these counts are usually 0: the test pins the bound,
it cannot force a loss.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import pytest

from conftest import name_on
from omniq_fast import (
    Client,
    ClusterUnavailable,
    ConnectionLost,
    Job,
    JobCtx,
    MultiConsumer,
    PublishManyError,
)
from omniq_fast.testing import EmbeddedCluster, find_server_binary
from support import wait_until
from test_resharding import assert_stats_agree_with_lanes, node_client

VICTIM_LEASE_MS = 2000  # acks lost with the victim: their jobs run again after this
OTHER_LEASE_MS = 60_000  # never expires here: those jobs must run exactly once
MAX_ATTEMPTS = 5  # a reaped attempt counts as failed; no job may end failed here
BULK = 5  # jobs per queue per publish_many_queues call, every 50 ms
BURST = 60  # jobs pushed onto each of the victim's queues just before the fence
WARM = 100  # jobs run on each queue before the fence, and again after the failover
CONSUMER_OPTIONS: dict[str, Any] = {
    "concurrency": 2,
    "poll_interval_s": 0.02,
    "promote_interval_s": 0.05,
    "reap_interval_s": 0.2,
    "stop_on_ctrl_c": False,
    "verbose": False,
}


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[EmbeddedCluster]:
    """A cluster for this module only: a test here kills one of its nodes."""
    try:
        find_server_binary()
    except FileNotFoundError as exc:
        if os.environ.get("OMNIQ_FAST_CLUSTER_SERVER"):
            raise  # a server was asked for: missing is an error, not a skip
        pytest.skip(f"no cluster server binary ({exc})")
    with EmbeddedCluster(masters=3, replicas=1) as started:
        yield started


@dataclass
class Ledger:
    """What was published (and when), what ran, and what went wrong, from many threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: job id -> (queue, publish call started, returned)
    published: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    #: job id -> queue, for publishes whose outcome is unknown (never sent again)
    unknown: dict[str, str] = field(default_factory=dict)
    #: job id -> [(attempt, handler started)]
    runs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # error name -> count
    errors: list[BaseException] = field(default_factory=list)

    def add(self, queue: str, started: float, job_ids: list[str]) -> None:
        ended = time.monotonic()
        with self.lock:
            for job_id in job_ids:
                self.published[job_id] = (queue, started, ended)

    def lost_track(self, queue: str, job_ids: list[str]) -> None:
        with self.lock:
            for job_id in job_ids:
                self.unknown[job_id] = queue

    def saw(self, exc: BaseException) -> None:
        name = type(exc).__name__
        if isinstance(exc, PublishManyError) and exc.__cause__ is not None:
            name += f"({type(exc.__cause__).__name__})"
        with self.lock:
            self.seen[name] = self.seen.get(name, 0) + 1

    def ran(self, ctx: JobCtx) -> None:
        with self.lock:
            self.runs.setdefault(ctx.job_id, []).append((ctx.attempt, time.monotonic()))

    def ids(self, queues: set[str], started_after: float = 0.0) -> list[str]:
        with self.lock:
            return [
                j for j, (q, s, _) in self.published.items() if q in queues and s > started_after
            ]

    def ran_count(self, job_ids: list[str]) -> int:
        with self.lock:
            return sum(1 for j in job_ids if j in self.runs)


_serial = itertools.count()


def new_job(queue: str, lease_ms: int) -> Job:
    n = next(_serial)
    grouped = n % 4 == 0
    return Job(
        {"n": n},
        job_id=f"{queue}-{n}",
        timeout_ms=lease_ms,
        max_attempts=MAX_ATTEMPTS,
        backoff_ms=10,
        gid=f"g{n % 3}" if grouped else None,
        group_limit=2 if grouped else None,
    )


class Producers:
    """A bulk and a single-job producer over every queue. ``close_victims`` stops them
    from sending to the victim's queues and returns once no such call is in flight."""

    def __init__(
        self, client: Client, impatient: Client, queues: list[str], victims: set[str],
        ledger: Ledger,
    ) -> None:  # fmt: skip
        self.client = client
        self.impatient = impatient  # the single producer's: ClusterUnavailable comes fast
        self.queues = queues
        self.victims = victims
        self.ledger = ledger
        self.lease = {q: VICTIM_LEASE_MS if q in victims else OTHER_LEASE_MS for q in queues}
        self.stop = threading.Event()
        self.victims_open = threading.Event()
        self.victims_open.set()
        self.gates = [threading.Lock(), threading.Lock()]
        self.threads = [
            threading.Thread(target=self._guard, args=(self._bulk,), daemon=True),
            threading.Thread(target=self._guard, args=(self._single,), daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close_victims(self) -> None:
        self.victims_open.clear()
        for gate in self.gates:
            with gate:
                pass

    def halt(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)
            assert not thread.is_alive(), "a producer is stuck"

    def _targets(self) -> list[str]:
        if self.victims_open.is_set():
            return self.queues
        return [q for q in self.queues if q not in self.victims]

    def _guard(self, loop: Any) -> None:
        try:
            loop()
        except BaseException as exc:  # reported by the test
            self.ledger.errors.append(exc)

    def _bulk(self) -> None:
        ledger = self.ledger
        unsent: dict[str, list[Job]] = {}  # never sent: safe to send again
        while not self.stop.is_set():
            with self.gates[0]:
                jobs = {
                    q: unsent.pop(q, []) + [new_job(q, self.lease[q]) for _ in range(BULK)]
                    for q in self._targets()
                }
                started = time.monotonic()
                try:
                    ids = self.client.publish_many_queues(jobs, batch_size=2)
                except PublishManyError as exc:
                    ledger.saw(exc)
                    written, unknown = set(exc.written), set(exc.unknown)
                    for queue, batch in jobs.items():
                        ledger.add(queue, started, [j.job_id for j in batch if j.job_id in written])
                        ledger.lost_track(queue, [j.job_id for j in batch if j.job_id in unknown])
                        rest = [j for j in batch if j.job_id not in written | unknown]
                        unsent.setdefault(queue, []).extend(rest)
                except ClusterUnavailable as exc:
                    ledger.saw(exc)
                    for queue, batch in jobs.items():  # nothing ran
                        unsent.setdefault(queue, []).extend(batch)
                else:
                    for queue, batch in jobs.items():
                        assert ids[queue] == [j.job_id for j in batch]
                        ledger.add(queue, started, ids[queue])
            self.stop.wait(0.05)

    def _single(self) -> None:
        ledger = self.ledger
        while not self.stop.is_set():
            for queue in self.queues:
                with self.gates[1]:
                    if queue not in self._targets():
                        continue
                    job = new_job(queue, self.lease[queue])
                    while not self.stop.is_set():
                        started = time.monotonic()
                        try:
                            self.impatient.publish(
                                queue, job.payload, job_id=job.job_id, timeout_ms=self.lease[queue],
                                max_attempts=MAX_ATTEMPTS, backoff_ms=10, gid=job.gid,
                                group_limit=job.group_limit or 0,
                            )  # fmt: skip
                        except ClusterUnavailable as exc:
                            ledger.saw(exc)  # did not run: send it again
                            continue
                        except ConnectionLost as exc:
                            ledger.saw(exc)
                            ledger.lost_track(queue, [str(job.job_id)])
                            break
                        ledger.add(queue, started, [str(job.job_id)])
                        break
                self.stop.wait(0.005)


def states_on(node: Any, jobs: dict[str, str]) -> dict[str, Optional[bytes]]:
    """Each job's ``state`` field on ``node`` (``jobs``: id -> queue); None if no hash."""
    conn = node_client(node)
    try:
        pipe = conn.pipeline(transaction=False)
        for job_id, queue in jobs.items():
            pipe.hget(f"{{{queue}}}:job:{job_id}", "state")
        return dict(zip(jobs, pipe.execute()))
    finally:
        conn.close()


def lanes_empty(cluster: EmbeddedCluster, queues: list[str]) -> bool:
    for queue in queues:
        base = "{" + queue + "}"
        owner = cluster.owner_of_slot(cluster.slot_of(base))
        conn = node_client(owner)
        try:
            pipe = conn.pipeline(transaction=False)
            pipe.llen(base + ":wait")
            pipe.zcard(base + ":active")
            pipe.zcard(base + ":delayed")
            for gid in ("g0", "g1", "g2"):
                pipe.llen(f"{base}:g:{gid}:wait")
            if sum(pipe.execute()):
                return False
        finally:
            conn.close()
    return True


def test_failover_under_load_keeps_what_was_replicated(
    own_cluster: EmbeddedCluster, cleanup: ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = own_cluster
    began = time.monotonic()
    masters = cluster.masters()
    victim = masters[0]
    (replica,) = cluster.replicas_of(victim)
    victims = [name_on(cluster, victim, "fo") for _ in range(3)]
    others = [name_on(cluster, m, "fo") for m in (masters[1], masters[2], masters[1])]
    queues = victims + others
    ledger = Ledger()
    client = Client(cluster.url)
    impatient = Client(cluster.url, cluster_retry_s=0.05)

    def handler(ctx: JobCtx) -> None:
        ledger.ran(ctx)
        time.sleep(0.002)  # a little work: a backlog takes a while to drain

    consumer = MultiConsumer(client, queues, handler, **CONSUMER_OPTIONS)
    results: list[Any] = []

    def consume() -> None:
        try:
            results.append(consumer.run())
        except BaseException as exc:
            ledger.errors.append(exc)

    consuming = threading.Thread(target=consume, daemon=True)
    producers = Producers(client, impatient, queues, set(victims), ledger)

    @cleanup.callback
    def _stop_all() -> None:
        producers.stop.set()
        consumer.stop()
        for thread in [*producers.threads, consuming]:
            if thread.is_alive():
                thread.join(15)
        client.close()
        impatient.close()

    consuming.start()
    producers.start()
    try:
        # Warm up: every queue busy.
        wait_until(
            lambda: all(ledger.ran_count(ledger.ids({q})) >= WARM for q in queues),
            f"{WARM} jobs run on every queue",
        )

        # A backlog on the victim's queues, so that jobs are waiting and running at the
        # fence. Then the fence: nothing more is sent to the victim; read what it holds;
        # make sure its replica has all of it.
        for queue in victims:
            burst = [new_job(queue, VICTIM_LEASE_MS) for _ in range(BURST)]
            started = time.monotonic()
            client.publish_many(queue, burst)
            ledger.add(queue, started, [str(j.job_id) for j in burst])
        producers.close_victims()
        before_fence = {j: ledger.published[j][0] for j in ledger.ids(set(victims))}
        states = states_on(victim, before_fence)
        completed_at_fence = {j for j, s in states.items() if s in (b"completed", None)}
        conn = node_client(victim)
        try:
            pipe = conn.pipeline(transaction=False)
            pipe.incr("{" + victims[0] + "}:fence")
            pipe.execute_command("WAIT", 1, 2000)
            _, replicated = pipe.execute()
        finally:
            conn.close()
        assert replicated == 1, "the replica did not acknowledge the fence"
        t_waited = time.monotonic()

        # Writes the replica may not get: the victim's queues take jobs again, then it dies.
        producers.victims_open.set()
        wait_until(
            lambda: len(ledger.ids(set(victims), started_after=t_waited)) >= 30,
            "publishes to the victim after the fence",
        )
        # Kill it busy: while its consumers work through a fresh backlog.
        late: list[str] = []
        for queue in victims:
            burst = [new_job(queue, VICTIM_LEASE_MS) for _ in range(BURST)]
            started = time.monotonic()
            client.publish_many(queue, burst)
            ledger.add(queue, started, [str(j.job_id) for j in burst])
            late.extend(str(j.job_id) for j in burst)
        wait_until(lambda: ledger.ran_count(late) >= 5, "the backlog to start")
        cluster.kill(victim)
        t_kill = time.monotonic()
        late_ran = ledger.ran_count(late)
        cluster.failover(replica)
        t_failover = time.monotonic()

        # On the promoted replica: what was completed at the fence still is; what was
        # published before it exists, or has run already (and may have been trimmed).
        after = states_on(replica, before_fence)
        with ledger.lock:
            ran_ok = set(ledger.runs)
        undone = {j: s for j, s in after.items() if j in completed_at_fence and s != b"completed"
                  and s is not None}  # fmt: skip
        assert not undone, f"completions before the fence lost in the failover: {undone}"
        missing = [j for j, s in after.items() if s is None and j not in ran_ok]
        assert not missing, f"jobs published before the fence lost in the failover: {missing}"

        # Life goes on, on every queue, the victim's included.
        wait_until(
            lambda: all(
                ledger.ran_count(ledger.ids({q}, started_after=t_failover)) >= WARM
                for q in queues
            ),
            f"{WARM} jobs published after the failover run on every queue",
        )
    finally:
        producers.halt()
    assert not ledger.errors, ledger.errors

    # Drain. Jobs whose ack was lost with the victim wait for their lease to expire.
    with ledger.lock:
        published = dict(ledger.published)
    must_run = [
        j for j, (q, s, e) in published.items()
        if q not in victims or j in before_fence or s > t_kill
    ]  # fmt: skip
    wait_until(lambda: ledger.ran_count(must_run) == len(must_run), "every job to run", timeout=20)
    wait_until(lambda: lanes_empty(cluster, queues), "every lane to drain", timeout=20)
    consumer.stop()
    consuming.join(15)
    assert not consuming.is_alive(), "the consumer did not stop"
    assert not ledger.errors, ledger.errors

    runs = ledger.runs
    unexpected = set(runs) - set(published) - set(ledger.unknown)
    assert not unexpected, f"jobs ran that were never published: {sorted(unexpected)[:5]}"
    # Completed at the fence: never ran again.
    for job_id in completed_at_fence:
        assert len(runs.get(job_id, [])) == 1, (job_id, runs.get(job_id))
    # Other masters' queues, and anything published after the failover: exactly once.
    exactly_once = [j for j, (q, s, _) in published.items() if q not in victims or s > t_failover]
    repeated = {j: runs.get(j) for j in exactly_once if len(runs.get(j, [])) != 1}
    assert not repeated, f"jobs that should have run once: {repeated}"
    # Everything the bound covers ran (checked by the drain above); nothing failed.
    for queue in queues:
        owner = cluster.owner_of_slot(cluster.slot_of("{" + queue + "}"))
        if queue in victims:
            assert owner.node_id == replica.node_id
        conn = node_client(owner)
        try:
            stats = assert_stats_agree_with_lanes(conn, queue)
            assert stats.get("failed", 0) == 0, queue
        finally:
            conn.close()

    # What the bound allowed, counted.
    window = [
        j for j, (q, s, e) in published.items()
        if q in victims and j not in before_fence and s <= t_kill
    ]  # fmt: skip
    lost_in_window = [j for j in window if j not in runs]
    victim_ids = [j for j, (q, _, _) in published.items() if q in victims]
    reran = [j for j in victim_ids if len(runs.get(j, [])) > 1]
    unknown_ran = [j for j in ledger.unknown if j in runs]
    follow_ids = {j for j, (q, s, _) in published.items() if q in victims and s > t_kill}
    follow = [published[j][2] for j in follow_ids]
    first_run = [t for j, rs in runs.items() if j in follow_ids for _, t in rs]
    backoffs = sum(1 for rec in caplog.records if "failed on" in rec.getMessage())
    print(
        f"\nfailover: {len(published)} jobs published ({len(victim_ids)} to the victim's "
        f"{len(victims)} queues), {sum(len(v) for v in runs.values())} handler runs; "
        f"at the fence {len(before_fence)} victim jobs, {len(completed_at_fence)} completed, "
        f"WAIT -> {replicated}; {len(window)} published between fence and kill, "
        f"{len(lost_in_window)} of them lost; {len(reran)} victim jobs ran more than once; "
        f"unknown outcome {len(ledger.unknown)} ({len(unknown_ran)} ran); "
        f"errors seen by producers {ledger.seen}; "
        f"failover took {t_failover - t_kill:.2f} s; first victim publish sent after the kill "
        f"returned {min(follow) - t_kill:.2f} s after it ({min(follow) - t_failover:+.2f} s "
        f"from failover done), the first such job ran {min(first_run) - t_kill:.2f} s after "
        f"the kill; {late_ran}/{len(late)} of the last backlog had run at the kill; "
        f"consumer {results[0]}, {backoffs} failed round trips or heartbeats; "
        f"{time.monotonic() - began:.1f} s"
    )
