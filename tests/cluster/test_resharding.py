"""Resharding: queue slots moved between masters while producers and consumers work.

The load test (:func:`test_resharding_under_load_loses_and_repeats_nothing`) runs, on 20
queues spread over the 3 masters of the session cluster:

* two producers: ``publish_many_queues`` over every queue (several small batches per queue,
  so a stream is cut by a migration mid-way) and single ``publish`` calls in turn;
* jobs of three kinds: ``ok``; ``once``, which fails its first attempt and is retried
  after a 5 ms backoff; ``always``, which fails both of its 2 attempts and ends ``failed``;
  a quarter of them grouped (``gid``, ``group_limit=2``);
* one :class:`~omniq_fast.MultiConsumer` (an :class:`~omniq_fast.AsyncMultiConsumer` on the
  async shell; the test runs on both) over the 20 queues, 2 handlers per queue;

and meanwhile moves the slots of 5 of the queues, 3 times each, every time to a master
other than the current one (15 migrations, ``migrate_slot`` with 40 keys per MIGRATE so a
move takes several steps). Just before each move the queue gets a burst of slow jobs: the
slot moves while the queue has jobs waiting and running.

What must hold at the end, once every queue is drained:

* no job lost: every published job succeeded once, except the ``always`` jobs, which are
  in their queue's ``failed`` list and nowhere else;
* no job repeated: a job's handler succeeded exactly once, ``once`` jobs ran exactly twice
  (attempts 1 and 2) and ``always`` jobs exactly twice. Leases are 60 s, so no lease can
  expire during the test: any second run would be a bug, not at-least-once delivery;
* every queue's stats hash agrees with its lanes (:func:`assert_stats_agree_with_lanes`),
  read on the node that owns the queue;
* every queue's keys live only on its slot's owner, the moved ones on their last target
  (``CLUSTER COUNTKEYSINSLOT`` on each master);
* the migrations happened under load: each moved keys (> 0), found its queue busy, and the
  queue both received and ran new jobs after it.

The focused tests drive one migration by hand (``CLUSTER SETSLOT ... MIGRATING /
IMPORTING``) to check the rule of :mod:`omniq_fast._cluster` for scripts and reads during a
migration: a script waits until the migration ends, running on neither node meanwhile,
then runs on the new owner; with a short ``cluster_retry_s`` it gives up with
``ClusterUnavailable`` having changed nothing; a plain read follows ``ASK`` and answers
from wherever the key is.

The last test checks that a ``publish_many`` which gives up with ``ClusterUnavailable``
after writing some jobs says which (a bare ``ClusterUnavailable`` would mean nothing ran).

Slots moved here are moved back to their first owner (emptied) at the end, so the session
cluster keeps its even split.
"""

from __future__ import annotations

import itertools
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import pytest
import redis
from redis.cluster import RedisCluster

from conftest import name_on
from omniq_fast import (
    Client,
    ClusterUnavailable,
    Job,
    JobCtx,
    PublishManyError,
    ReservedJob,
)
from shells import consumer_of
from support import delete_prefixed, wait_until

QUEUES = 20
MOVERS = 5
ROUNDS = 3
KEYS_PER_MIGRATE = 40
BURST = 40  # slow jobs pushed onto a queue just before its slot moves
LEASE_MS = 60_000  # far beyond the test: a lease never expires, so nothing may run twice
CONSUMER_OPTIONS: dict[str, Any] = {
    "concurrency": 2,
    "poll_interval_s": 0.02,
    "promote_interval_s": 0.05,
    "reap_interval_s": 0.5,
    "stop_on_ctrl_c": False,
    "verbose": False,
}
COUNTERS = (
    "waiting", "group_waiting", "waiting_total", "active", "delayed", "failed",
    "completed_kept", "groups_ready",
)  # fmt: skip


# --------------------------------------------------------------------------- node access


def node_client(node: Any) -> redis.Redis:
    """A plain connection to one node: no redirection is followed, so a read shows what
    that node holds."""
    return redis.Redis(host=node.host, port=node.port, socket_timeout=10)


def keys_in_slot(conn: redis.Redis, slot: int) -> list[bytes]:
    keys: list[bytes] = conn.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100_000)
    return keys


def count_in_slot(node: Any, slot: int) -> int:
    conn = node_client(node)
    try:
        return int(conn.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
    finally:
        conn.close()


def slot_keyspace(node: Any, slot: int, asking: bool = False) -> dict[bytes, Any]:
    """Every key of ``slot`` that ``node`` holds, with its type and value (``asking``:
    read an importing slot, each read preceded by ASKING)."""
    conn = node_client(node)

    def read_all(read: Callable[[Any, bytes], Any], keys: list[bytes]) -> list[Any]:
        pipe = conn.pipeline(transaction=False)
        for key in keys:
            if asking:
                pipe.execute_command("ASKING")
            read(pipe, key)
        replies = pipe.execute()
        return replies[1::2] if asking else replies

    readers: dict[str, Callable[[Any, bytes], Any]] = {
        "string": lambda p, k: p.get(k),
        "hash": lambda p, k: p.hgetall(k),
        "list": lambda p, k: p.lrange(k, 0, -1),
        "set": lambda p, k: p.smembers(k),
        "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
    }
    try:
        keys = keys_in_slot(conn, slot)
        kinds = [k.decode() for k in read_all(lambda p, k: p.type(k), keys)]
        out = {}
        for key, kind in zip(keys, kinds):
            (value,) = read_all(readers[kind], [key])
            out[key] = (kind, sorted(value) if kind == "set" else value)
        return out
    finally:
        conn.close()


def assert_stats_agree_with_lanes(conn: redis.Redis, queue: str) -> dict[str, int]:
    """The queue's stats counters (PROTOCOL.md §4) match its lanes, its ``idx:`` zsets
    match the lanes, every job in a lane is in that lane's state, and each group's
    inflight counter is its number of active jobs. ``conn`` must be a connection to the
    node that owns the queue. Returns the counters."""
    base = "{" + queue + "}"
    raw = conn.hgetall(base + ":stats")
    stats = {k.decode(): int(v) for k, v in raw.items() if k.decode() in COUNTERS}
    wait = conn.lrange(base + ":wait", 0, -1)
    groups = {
        key.decode()[len(base) + 3 : -5]: conn.lrange(key, 0, -1)
        for key in conn.scan_iter(match=base + ":g:*:wait", count=1000)
    }
    grouped = [job_id for ids in groups.values() for job_id in ids]
    active = conn.zrange(base + ":active", 0, -1)
    delayed = conn.zrange(base + ":delayed", 0, -1)
    failed = conn.lrange(base + ":failed", 0, -1)
    completed = conn.lrange(base + ":completed", 0, -1)
    ready = conn.zrange(base + ":groups:ready", 0, -1)
    where = f"queue {queue}"
    assert stats.get("waiting", 0) == len(wait), where
    assert stats.get("group_waiting", 0) == len(grouped), where
    assert stats.get("waiting_total", 0) == len(wait) + len(grouped), where
    assert stats.get("active", 0) == len(active), where
    assert stats.get("delayed", 0) == len(delayed), where
    assert stats.get("failed", 0) == len(failed), where
    assert stats.get("completed_kept", 0) == len(completed), where
    assert stats.get("groups_ready", 0) == len(ready), where
    lanes = {
        "wait": wait + grouped, "active": active, "delayed": delayed,
        "failed": failed, "completed": completed,
    }  # fmt: skip
    for lane, ids in lanes.items():
        assert len(set(ids)) == len(ids), f"{where}: an id twice in {lane}"
        assert set(conn.zrange(f"{base}:idx:{lane}", 0, -1)) == set(ids), f"{where}: idx:{lane}"
    everywhere = [job_id for ids in lanes.values() for job_id in ids]
    assert len(set(everywhere)) == len(everywhere), f"{where}: an id in two lanes"
    pipe = conn.pipeline(transaction=False)
    for lane, ids in lanes.items():
        for job_id in ids:
            pipe.hmget(f"{base}:job:{job_id.decode()}", "state", "gid")
    fields = iter(pipe.execute())
    running: dict[str, int] = {}
    for lane, ids in lanes.items():
        for job_id in ids:
            state, gid = next(fields)
            assert state == lane.encode(), f"{where}: job {job_id!r} in {lane} is {state!r}"
            if lane == "active" and gid:
                running[gid.decode()] = running.get(gid.decode(), 0) + 1
    for gid in set(groups) | set(running):
        inflight = int(conn.get(f"{base}:g:{gid}:inflight") or 0)
        assert inflight == running.get(gid, 0), f"{where}: group {gid} inflight"
    return stats


# --------------------------------------------------------------------------- migrations


class Resharder:
    """Slot moves of one test, undone at teardown: an unfinished migration is finished,
    then every moved slot is emptied and moved back to its first owner."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.home: dict[int, Any] = {}  # slot -> first owner
        self.open: dict[int, tuple[Any, Any]] = {}  # slot -> (source, target) mid-move

    def migrate(self, slot: int, dst: Any) -> int:
        self.home.setdefault(slot, self.cluster.owner_of_slot(slot))
        moved: int = self.cluster.migrate_slot(slot, dst, keys_per_call=KEYS_PER_MIGRATE)
        return moved

    def begin(self, slot: int, src: Any, dst: Any) -> None:
        """CLUSTER SETSLOT IMPORTING on the target, then MIGRATING on the source."""
        self.home.setdefault(slot, src)
        self.open[slot] = (src, dst)
        for node, args in ((dst, ("IMPORTING", src.node_id)), (src, ("MIGRATING", dst.node_id))):
            conn = node_client(node)
            try:
                conn.execute_command("CLUSTER", "SETSLOT", slot, *args)
            finally:
                conn.close()

    def move_keys(self, slot: int, keys: Optional[list[bytes]] = None) -> int:
        """MIGRATE ``keys`` (default: all that are left) from the source to the target."""
        src, dst = self.open[slot]
        conn = node_client(src)
        try:
            todo = keys_in_slot(conn, slot) if keys is None else keys
            for i in range(0, len(todo), KEYS_PER_MIGRATE):
                chunk = todo[i : i + KEYS_PER_MIGRATE]
                conn.execute_command("MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", *chunk)
            return len(todo)
        finally:
            conn.close()

    def finish(self, slot: int) -> None:
        """Move what is left, then SETSLOT NODE on the target, the source, the others."""
        self.move_keys(slot)
        src, dst = self.open.pop(slot)
        others = [m for m in self.cluster.masters() if m.node_id not in (src.node_id, dst.node_id)]
        for node in [dst, src, *others]:
            conn = node_client(node)
            try:
                conn.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
            finally:
                conn.close()
        self.cluster.wait_ok()

    def abort(self, slot: int) -> None:
        """SETSLOT STABLE on both ends (only right while no key has moved)."""
        src, dst = self.open.pop(slot)
        for node in (src, dst):
            conn = node_client(node)
            try:
                conn.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            finally:
                conn.close()
        self.cluster.wait_ok()

    def undo(self) -> None:
        for slot in list(self.open):
            self.finish(slot)
        for slot, home in self.home.items():
            owner = self.cluster.owner_of_slot(slot)
            if owner.node_id == home.node_id:
                continue
            conn = node_client(owner)
            try:
                keys = keys_in_slot(conn, slot)
                if keys:
                    conn.delete(*keys)
            finally:
                conn.close()
            self.cluster.migrate_slot(slot, home)


@pytest.fixture
def resharder(cluster: Any) -> Iterator[Resharder]:
    moves = Resharder(cluster)
    yield moves
    moves.undo()


@pytest.fixture
def names(cluster: Any, r: RedisCluster) -> Iterator[Callable[[Any], str]]:
    """``names(master)``: a fresh queue name on ``master``; its keys are deleted after."""
    made: list[str] = []

    def make(master: Any) -> str:
        made.append(name_on(cluster, master, "rs"))
        return made[-1]

    yield make
    for name in made:
        delete_prefixed(r, "{" + name)


# --------------------------------------------------------------------------- the load test


@dataclass
class Ledger:
    """What the producers published and what the handler saw, from many threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: job id -> (queue, kind, when the successful publish call started)
    published: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    #: per queue, (publish start, job id) in publish order
    by_queue: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    #: job id -> [(attempt, succeeded, queue, started)]
    runs: dict[str, list[tuple[int, bool, str, float]]] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)

    def add(self, queue: str, started: float, jobs: list[tuple[str, str]]) -> None:
        with self.lock:
            for job_id, kind in jobs:
                self.published[job_id] = (queue, kind, started)
                self.by_queue.setdefault(queue, []).append((started, job_id))

    def ran(self, ctx: JobCtx, ok: bool) -> None:
        with self.lock:
            self.runs.setdefault(ctx.job_id, []).append(
                (ctx.attempt, ok, ctx.queue, time.monotonic())
            )

    def fresh_job_ran(self, queue: str, since: float) -> bool:
        """A job published to ``queue`` after ``since`` has run (so it was queued and
        reserved after that time)."""
        with self.lock:
            for started, job_id in reversed(self.by_queue.get(queue, [])):
                if started <= since:
                    return False
                if job_id in self.runs:
                    return True
        return False

    def all_settled(self) -> bool:
        """Every published job has run to its designed end (as the handler saw it)."""
        with self.lock:
            for job_id, (_, kind, _) in self.published.items():
                runs = self.runs.get(job_id, [])
                if kind == "always":
                    if sum(1 for _, ok, _, _ in runs if not ok) < 2:
                        return False
                elif not any(ok for _, ok, _, _ in runs):
                    return False
        return True


def handler_for(ledger: Ledger) -> Callable[[JobCtx], None]:
    def handler(ctx: JobCtx) -> None:
        kind = ctx.payload["k"]
        fail = kind == "always" or (kind == "once" and ctx.attempt == 1)
        ledger.ran(ctx, not fail)
        if ctx.payload.get("slow"):
            time.sleep(0.004)
        if fail:
            raise RuntimeError(f"designed failure ({kind})")

    return handler


_serial = itertools.count()


def new_job(queue: str, slow: bool = False) -> tuple[Job, str]:
    """A job with our own id: every 10th fails once, every 23rd always; every 4th is
    grouped."""
    n = next(_serial)
    kind = "always" if n % 23 == 7 else "once" if n % 10 == 3 else "ok"
    payload: dict[str, Any] = {"k": kind}
    if slow:
        payload["slow"] = 1
    grouped = n % 4 == 0
    job = Job(
        payload,
        job_id=f"{queue}-{n}",
        max_attempts=2 if kind == "always" else 3,
        gid=f"g{n % 3}" if grouped else None,
        group_limit=2 if grouped else None,
    )
    return job, kind


PUBLISH_OPTIONS: dict[str, Any] = {"timeout_ms": LEASE_MS, "backoff_ms": 5}


def bulk_producer(client: Client, queues: list[str], ledger: Ledger, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            jobs = {q: [new_job(q) for _ in range(2)] for q in queues}
            started = time.monotonic()
            ids = client.publish_many_queues(
                {q: [job for job, _ in pairs] for q, pairs in jobs.items()},
                batch_size=1,
                **PUBLISH_OPTIONS,
            )
            for queue, pairs in jobs.items():
                assert ids[queue] == [job.job_id for job, _ in pairs]
                ledger.add(queue, started, [(str(job.job_id), kind) for job, kind in pairs])
            stop.wait(0.1)
    except BaseException as exc:  # reported by the test
        ledger.errors.append(exc)


def single_producer(
    client: Client, queues: list[str], ledger: Ledger, stop: threading.Event
) -> None:
    try:
        for queue in itertools.cycle(queues):
            if stop.is_set():
                return
            job, kind = new_job(queue)
            started = time.monotonic()
            job_id = client.publish(
                queue, job.payload, job_id=job.job_id, max_attempts=job.max_attempts or 3,
                gid=job.gid, group_limit=job.group_limit or 0, **PUBLISH_OPTIONS,
            )  # fmt: skip
            assert job_id == job.job_id
            ledger.add(queue, started, [(job_id, kind)])
            stop.wait(0.01)
    except BaseException as exc:
        ledger.errors.append(exc)


@dataclass
class Migration:
    queue: str
    slot: int
    source: int  # master index
    target: int
    backlog: int  # jobs waiting or running on the source when the move began
    keys: int = 0
    ran_during: int = 0  # handler runs of the queue while the slot was moving
    started: float = 0.0
    ended: float = 0.0


def backlog(node: Any, queue: str) -> int:
    base = "{" + queue + "}"
    conn = node_client(node)
    try:
        pipe = conn.pipeline(transaction=False)
        pipe.llen(base + ":wait")
        pipe.zcard(base + ":active")
        for gid in ("g0", "g1", "g2"):
            pipe.llen(f"{base}:g:{gid}:wait")
        return sum(pipe.execute())
    finally:
        conn.close()


def lanes_empty(r: RedisCluster, queue: str) -> bool:
    base = "{" + queue + "}"
    total = r.llen(base + ":wait") + r.zcard(base + ":active") + r.zcard(base + ":delayed")
    total += sum(r.llen(f"{base}:g:{gid}:wait") for gid in ("g0", "g1", "g2"))
    return total == 0


def test_resharding_under_load_loses_and_repeats_nothing(
    cluster: Any,
    r: RedisCluster,
    names: Callable[[Any], str],
    resharder: Resharder,
    cleanup: ExitStack,
    shell: Any,
) -> None:
    began = time.monotonic()
    masters = cluster.masters()
    queues = [names(masters[i % len(masters)]) for i in range(QUEUES)]
    movers = queues[:MOVERS]  # on masters 0, 1, 2, 0, 1
    ledger = Ledger()
    stop = threading.Event()
    client = shell(cluster.url)
    consumer = consumer_of(client, queues, handler_for(ledger), **CONSUMER_OPTIONS)
    consumed: list[Any] = []

    def consume() -> None:
        try:
            consumed.append(consumer.run())
        except BaseException as exc:
            ledger.errors.append(exc)

    threads = [
        threading.Thread(target=consume, daemon=True),
        threading.Thread(target=bulk_producer, args=(client, queues, ledger, stop), daemon=True),
        threading.Thread(target=single_producer, args=(client, queues, ledger, stop), daemon=True),
    ]

    @cleanup.callback
    def _stop_all() -> None:
        stop.set()
        consumer.stop()
        for thread in threads:
            if thread.is_alive():
                thread.join(15)
        client.close()

    migrations: list[Migration] = []
    try:
        for thread in threads:
            thread.start()
        wait_until(
            lambda: all(ledger.fresh_job_ran(q, began) for q in queues), "load on every queue"
        )
        for round_ in range(ROUNDS):
            for queue in movers:
                slot = cluster.slot_of("{" + queue + "}")
                src = cluster.owner_of_slot(slot)
                i = next(k for k, m in enumerate(masters) if m.node_id == src.node_id)
                dst = masters[(i + 1 + round_ % 2) % len(masters)]
                # Make the queue busy: a burst of slow jobs, still there as the slot moves.
                burst = [new_job(queue, slow=True) for _ in range(BURST)]
                started = time.monotonic()
                client.publish_many(queue, [job for job, _ in burst], **PUBLISH_OPTIONS)
                ledger.add(queue, started, [(str(job.job_id), kind) for job, kind in burst])
                move = Migration(queue, slot, i, masters.index(dst), backlog(src, queue))
                move.started = time.monotonic()
                move.keys = resharder.migrate(slot, dst)
                move.ended = time.monotonic()
                migrations.append(move)
                # New jobs reach the queue on its new master, and run.
                wait_until(
                    lambda: ledger.fresh_job_ran(queue, move.ended),
                    f"a job published to {queue} after its move to run",
                )
        # Every queue still takes and runs jobs after the last move.
        after_all = time.monotonic()
        wait_until(lambda: all(ledger.fresh_job_ran(q, after_all) for q in queues), "the tail")
    finally:
        stop.set()
        for thread in threads[1:]:
            thread.join(10)
    assert not ledger.errors, ledger.errors

    # Drain: every job done (as the handler saw it), then every lane empty.
    wait_until(ledger.all_settled, "every published job to settle", timeout=20)
    wait_until(lambda: all(lanes_empty(r, q) for q in queues), "every lane to drain", timeout=20)
    consumer.stop()
    threads[0].join(15)
    assert not threads[0].is_alive(), "the consumer did not stop"
    assert not ledger.errors, ledger.errors
    handled = consumed[0]

    # No job lost, none repeated.
    unknown = set(ledger.runs) - set(ledger.published)
    assert not unknown, f"jobs ran that were never published: {sorted(unknown)[:5]}"
    failed_expected: dict[str, set[bytes]] = {q: set() for q in queues}
    for job_id, (queue, kind, _) in ledger.published.items():
        runs = sorted(ledger.runs.get(job_id, []))
        attempts = [a for a, _, _, _ in runs]
        outcomes = [ok for _, ok, _, _ in runs]
        assert all(q == queue for _, _, q, _ in runs), (job_id, runs)
        if kind == "ok":
            assert attempts == [1] and outcomes == [True], (job_id, runs)
        elif kind == "once":
            assert attempts == [1, 2] and outcomes == [False, True], (job_id, runs)
        else:
            assert attempts == [1, 2] and outcomes == [False, False], (job_id, runs)
            failed_expected[queue].add(job_id.encode())

    # Each queue: its keys on its owner only, the counters agree with the lanes, failed
    # holds exactly the jobs designed to fail.
    last_target = {m.queue: masters[m.target] for m in migrations}
    totals = {"completed_kept": 0, "failed": 0}
    for queue in queues:
        slot = cluster.slot_of("{" + queue + "}")
        owner = cluster.owner_of_slot(slot)
        if queue in last_target:
            assert owner.node_id == last_target[queue].node_id
        for node in masters:
            count = count_in_slot(node, slot)
            if node.node_id == owner.node_id:
                assert count > 0, f"{queue}: no key on its owner"
            else:
                assert count == 0, f"{queue}: {count} keys left on a master not owning it"
        conn = node_client(owner)
        try:
            stats = assert_stats_agree_with_lanes(conn, queue)
            assert set(conn.lrange("{" + queue + "}:failed", 0, -1)) == failed_expected[queue]
        finally:
            conn.close()
        for name in totals:
            totals[name] += stats.get(name, 0)

    # The migrations happened under load.
    for move in migrations:
        move.ran_during = sum(
            1
            for runs in ledger.runs.values()
            for _, _, q, t in runs
            if q == move.queue and move.started <= t <= move.ended
        )
    assert len(migrations) == ROUNDS * MOVERS
    assert all(m.keys > 0 for m in migrations), [(m.queue, m.keys) for m in migrations]
    assert all(m.source != m.target for m in migrations)
    assert sum(1 for m in migrations if m.backlog > 0) >= len(migrations) // 2, [
        m.backlog for m in migrations
    ]
    kinds = [kind for _, kind, _ in ledger.published.values()]
    print(
        f"\nresharding: {len(ledger.published)} jobs ({kinds.count('once')} failing once, "
        f"{kinds.count('always')} failing always) on {QUEUES} queues; "
        f"{sum(len(v) for v in ledger.runs.values())} handler runs; consumer stats {handled}; "
        f"{len(migrations)} migrations moved {sum(m.keys for m in migrations)} keys "
        f"(per move {min(m.keys for m in migrations)}-{max(m.keys for m in migrations)}, "
        f"{sum(m.ended - m.started for m in migrations) / len(migrations) * 1000:.0f} ms avg), "
        f"backlog at move {[m.backlog for m in migrations]}, "
        f"handler runs during moves {[m.ran_during for m in migrations]}; "
        f"{time.monotonic() - began:.1f} s"
    )


# --------------------------------------------------------------------------- by hand


def test_a_script_waits_for_the_migration_then_runs_on_the_new_owner(
    cluster: Any, names: Callable[[Any], str], resharder: Resharder, shell: Any
) -> None:
    src, dst = cluster.masters()[:2]
    queue = names(src)
    slot = cluster.slot_of("{" + queue + "}")
    with shell(cluster.url) as client:
        first = client.publish_many(queue, [{"i": i} for i in range(6)], timeout_ms=LEASE_MS)[0]
        resharder.begin(slot, src, dst)
        before = slot_keyspace(src, slot)
        assert before and count_in_slot(dst, slot) == 0
        done: dict[str, tuple[Any, float]] = {}

        def call(name: str, fn: Callable[[], Any]) -> threading.Thread:
            def run() -> None:
                try:
                    done[name] = (fn(), time.monotonic())
                except BaseException as exc:
                    done[name] = (exc, time.monotonic())

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            return thread

        threads = [
            call("reserve", lambda: client.reserve(queue)),
            call("publish", lambda: client.publish(queue, {"late": 1}, job_id="late")),
        ]
        # Both calls are held back: nothing ran on the source, nothing reached the target.
        for thread in threads:
            thread.join(0.3)
            assert thread.is_alive(), done
        assert slot_keyspace(src, slot) == before
        assert count_in_slot(dst, slot) == 0

        # Half the keys move: the queue is split over two nodes, and still nothing runs.
        half = sorted(before)[: len(before) // 2]
        resharder.move_keys(slot, half)
        time.sleep(0.2)  # the calls keep retrying meanwhile
        assert all(thread.is_alive() for thread in threads), done
        split = {**slot_keyspace(src, slot), **slot_keyspace(dst, slot, asking=True)}
        assert split == before

        finishing = time.monotonic()
        resharder.finish(slot)
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
    job, reserved_at = done["reserve"]
    late, published_at = done["publish"]
    assert isinstance(job, ReservedJob) and job.job_id == first, job
    assert late == "late"
    assert reserved_at > finishing and published_at > finishing
    # Both ran on the new owner; the old one holds nothing of the queue.
    assert count_in_slot(src, slot) == 0
    conn = node_client(dst)
    try:
        base = "{" + queue + "}"
        assert conn.hget(f"{base}:job:{first}", "state") == b"active"
        assert conn.hget(f"{base}:job:late", "state") == b"wait"
        assert conn.lindex(base + ":wait", -1) == b"late"
        stats = assert_stats_agree_with_lanes(conn, queue)
        assert stats["active"] == 1 and stats["waiting"] == 6
    finally:
        conn.close()


def test_a_migration_that_never_ends_makes_calls_give_up_untouched(
    cluster: Any, names: Callable[[Any], str], resharder: Resharder, shell: Any
) -> None:
    src, dst = cluster.masters()[1:3]
    queue = names(src)
    slot = cluster.slot_of("{" + queue + "}")
    with shell(cluster.url, cluster_retry_s=0.3) as client:
        first = client.publish(queue, {"i": 0}, timeout_ms=LEASE_MS)
        resharder.begin(slot, src, dst)
        try:
            before = slot_keyspace(src, slot)
            calls: dict[str, Callable[[], Any]] = {
                "reserve": lambda: client.reserve(queue),
                "publish": lambda: client.publish(queue, {"i": 1}),
                "publish_many": lambda: client.publish_many(queue, [{"i": 2}] * 3),
                "pause": lambda: client.pause(queue),
            }
            for name, fn in calls.items():
                started = time.monotonic()
                with pytest.raises(ClusterUnavailable):
                    fn()
                took = time.monotonic() - started
                assert 0.3 <= took < 3.0, (name, took)
            assert slot_keyspace(src, slot) == before
            assert count_in_slot(dst, slot) == 0
        finally:
            resharder.abort(slot)  # STABLE on both: the slot stays with its source
        assert cluster.owner_of_slot(slot).node_id == src.node_id
        job = client.reserve(queue)
        assert isinstance(job, ReservedJob) and job.job_id == first


def test_a_read_during_a_migration_follows_ask(
    cluster: Any, names: Callable[[Any], str], resharder: Resharder, shell: Any
) -> None:
    src, dst = cluster.masters()[2], cluster.masters()[0]
    queue = names(src)
    slot = cluster.slot_of("{" + queue + "}")
    base = "{" + queue + "}"
    with shell(cluster.url) as client:
        moved_job = client.publish(queue, {"i": 0}, timeout_ms=4321)
        staying_job = client.publish(queue, {"i": 1}, timeout_ms=8765)
        client.pause(queue)
        resharder.begin(slot, src, dst)
        resharder.move_keys(slot, [f"{base}:paused".encode(), f"{base}:job:{moved_job}".encode()])
        on_source = set(slot_keyspace(src, slot))
        on_target = set(slot_keyspace(dst, slot, asking=True))
        assert on_target == {f"{base}:paused".encode(), f"{base}:job:{moved_job}".encode()}
        assert not on_source & on_target and f"{base}:job:{staying_job}".encode() in on_source
        assert client.is_paused(queue) is True  # only on the target
        assert client.job_timeout_ms(queue, moved_job) == 4321  # only on the target
        assert client.job_timeout_ms(queue, staying_job) == 8765  # still on the source
        assert client.job_timeout_ms(queue, "no-such-job") == 0  # on neither
        resharder.finish(slot)
        assert client.is_paused(queue) is True
        assert client.resume(queue) == 1
        assert client.is_paused(queue) is False
        assert client.job_timeout_ms(queue, staying_job) == 8765
    assert count_in_slot(src, slot) == 0 and count_in_slot(dst, slot) > 0


def test_publish_many_that_gives_up_reports_what_it_wrote(
    cluster: Any, names: Callable[[Any], str], resharder: Resharder, shell: Any
) -> None:
    """Queue ``a`` is on a healthy master, queue ``b``'s slot is stuck mid-migration: all
    of ``a``'s jobs are written, then the client gives up on ``b``. A bare
    ``ClusterUnavailable`` would tell the caller nothing ran (and to publish it all
    again); the written ids must come back in a ``PublishManyError``."""
    first, src, dst = cluster.masters()
    a, b = names(first), names(src)
    slot = cluster.slot_of("{" + b + "}")
    resharder.begin(slot, src, dst)
    try:
        with shell(cluster.url, cluster_retry_s=0.3) as client:
            with pytest.raises(PublishManyError) as raised:
                client.publish_many_queues({a: [{"i": i} for i in range(10)], b: [{"i": 0}]})
    finally:
        resharder.abort(slot)
    assert len(raised.value.written) == 10 and not raised.value.unknown
    assert isinstance(raised.value.__cause__, ClusterUnavailable)
    conn = node_client(first)
    try:
        assert conn.llen("{" + a + "}:wait") == 10
    finally:
        conn.close()
