"""omniq-fast and the official ``omniq==4.0.0`` SDK on one database, both ways.

What one side publishes the other consumes (through its consumer loop or by hand); leases
taken by one side are heartbeated and acked by the other; each side's monitor reads the
other's queues and must report the same. The official package is a black box: only its
public methods are called, and its client objects are never printed.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Optional

import pytest
import redis

from omniq_fast import Client, Consumer, JobCtx, TokenMismatch, now_ms
from support import job_hash, tagged, wait_until

POLL = {"poll_interval_s": 0.01, "promote_interval_s": 0.02, "reap_interval_s": 0.05}
WORK_S = 0.03
WAIT_S = 15.0  # how long a whole workload may take to complete


def states(r: redis.Redis, queue: str, ids: list[str]) -> list[Optional[str]]:
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(f"{{{queue}}}:job:{job_id}", "state")
    return [v.decode() if v is not None else None for v in pipe.execute()]


@pytest.fixture
def client(redis_url: str, core: ModuleType) -> Iterator[Client]:
    with Client(redis_url, _core=core) as c:
        yield c


@pytest.fixture
def shell_client(redis_url: str, core: ModuleType, shell: Any) -> Iterator[Client]:
    """Our client on either shell, for the tests that drive its methods directly (the
    consumer and monitor tests take the blocking ``client``)."""
    with shell(redis_url, _core=core) as c:
        yield c


# --------------------------------------------------------------------------- a mixed workload


@dataclasses.dataclass
class Mix:
    """One queue's worth of jobs of every kind, and what the handlers saw."""

    queue: str
    a: list[str]  # gid "a", limit 1
    b: list[str]  # gid "b", limit 2
    plain: list[str]
    delayed: str
    delayed_due: int
    flaky: str  # fails on its first attempt
    payloads: dict[str, Any]

    @property
    def ids(self) -> list[str]:
        return self.a + self.b + self.plain + [self.delayed, self.flaky]


def publish_mix(publish: Callable[..., str], queue: str) -> Mix:
    """``publish`` is either client's publish, called with the official keyword names."""
    payloads: dict[str, Any] = {}

    def pub(payload: Any, **options: Any) -> str:
        job_id = publish(queue=queue, payload=payload, **options)
        payloads[job_id] = payload
        return job_id

    a = [pub({"g": "a", "i": i}, gid="a", group_limit=1) for i in range(3)]
    b = [pub({"g": "b", "i": i, "text": "ü"}, gid="b", group_limit=2) for i in range(3)]
    plain = [pub([i, {"plain": True}]) for i in range(3)]
    due = now_ms() + 300
    delayed = pub({"delayed": True}, due_ms=due)
    flaky = pub({"fail_once": True}, max_attempts=2, backoff_ms=20)
    return Mix(queue, a, b, plain, delayed, due, flaky, payloads)


def record(
    seen: list[dict[str, Any]], job_id: str, gid: str, attempt: int, payload: Any, who: str
) -> None:
    """The shared handler body: work a little, fail the flaky job's first attempt."""
    start = time.time()
    time.sleep(WORK_S)
    seen.append(
        {
            "job_id": job_id,
            "gid": gid,
            "attempt": attempt,
            "payload": payload,
            "start": start,
            "end": time.time(),
            "who": who,
        }
    )
    if isinstance(payload, dict) and payload.get("fail_once") and attempt == 1:
        raise RuntimeError("once")


def check_done(r: redis.Redis, mix: Mix, seen: list[dict[str, Any]]) -> None:
    """Every job completed exactly as the protocol says, whoever produced and consumed."""
    q = mix.queue
    assert states(r, q, mix.ids) == ["completed"] * len(mix.ids)
    by_job: dict[str, list[dict[str, Any]]] = {}
    for rec in seen:
        by_job.setdefault(rec["job_id"], []).append(rec)
    for job_id in mix.ids:
        runs = by_job[job_id]
        expected = [1, 2] if job_id == mix.flaky else [1]
        assert [rec["attempt"] for rec in runs] == expected, job_id
        assert all(rec["payload"] == mix.payloads[job_id] for rec in runs)
        assert all(
            rec["gid"] == ("a" if job_id in mix.a else "b" if job_id in mix.b else "")
            for rec in runs
        )
    flaky = job_hash(r, q, mix.flaky)
    assert flaky["attempt"] == "2" and flaky["last_error"].partition("\n")[0] == "RuntimeError: once"
    assert by_job[mix.delayed][0]["start"] * 1000 >= mix.delayed_due - 1
    # Group a (limit 1) ran one at a time, in order; group b never more than 2 at once.
    spans_a = sorted((rec for rec in seen if rec["gid"] == "a"), key=lambda rec: rec["start"])
    assert [rec["job_id"] for rec in spans_a] == mix.a
    for prev, nxt in zip(spans_a, spans_a[1:]):
        assert nxt["start"] >= prev["end"], (prev, nxt)
    spans_b = [rec for rec in seen if rec["gid"] == "b"]
    for rec in spans_b:
        overlapping = [o for o in spans_b if o["start"] <= rec["start"] < o["end"]]
        assert len(overlapping) <= 2
    stats = {k.decode(): int(v) for k, v in r.hgetall(f"{{{q}}}:stats").items()}
    for name in (
        "active",
        "waiting",
        "group_waiting",
        "waiting_total",
        "delayed",
        "failed",
        "groups_ready",
    ):
        assert stats.get(name, 0) == 0, (name, stats)
    assert stats["completed_kept"] == len(mix.ids)
    assert r.zcard(f"{{{q}}}:active") == r.zcard(f"{{{q}}}:delayed") == 0
    for gid in ("a", "b"):
        assert int(r.get(f"{{{q}}}:g:{gid}:inflight") or 0) == 0


def test_official_publishes_we_consume(
    client: Client,
    redis_url: str,
    core: ModuleType,
    oracle_on_ours: Any,
    r: redis.Redis,
    qname: str,
) -> None:
    mix = publish_mix(oracle_on_ours.publish, qname)
    seen: list[dict[str, Any]] = []

    def handler(ctx: JobCtx) -> None:
        record(seen, ctx.job_id, ctx.gid, ctx.attempt, ctx.payload, "ours")

    with Client(redis_url, _core=core) as second:
        consumers = [Consumer(c, qname, handler, **POLL) for c in (client, second)]
        threads = [threading.Thread(target=c.run, daemon=True) for c in consumers]
        for t in threads:
            t.start()
        try:
            wait_until(
                lambda: states(r, qname, mix.ids) == ["completed"] * len(mix.ids),
                "every job to complete",
                timeout=WAIT_S,
            )
        finally:
            for c in consumers:
                c.stop()
            for t in threads:
                t.join(10)
    assert not any(t.is_alive() for t in threads)
    check_done(r, mix, seen)
    assert sum(c.stats.succeeded for c in consumers) == len(mix.ids)
    assert sum(c.stats.failed for c in consumers) == 1


_OFFICIAL_CONSUMER = textwrap.dedent("""
    import json, sys, time
    from urllib.parse import urlsplit
    import redis
    from omniq.client import OmniqClient

    url, queue, work_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    client = OmniqClient(host=parts.hostname, port=parts.port or 6379, db=db,
                         username=parts.username, password=parts.password)
    r = redis.Redis(host=parts.hostname, port=parts.port or 6379, db=db,
                    username=parts.username, password=parts.password)
    if r.info("cluster").get("cluster_enabled"):  # tests/cluster runs this too
        r = redis.RedisCluster(host=parts.hostname, port=parts.port or 6379,
                               username=parts.username, password=parts.password)
    seen_key = "{" + queue + "}:test:seen"

    def handler(ctx):
        start = time.time()
        time.sleep(work_s)
        rec = {"job_id": ctx.job_id, "gid": ctx.gid, "attempt": ctx.attempt,
               "payload": ctx.payload, "payload_raw": ctx.payload_raw,
               "max_attempts": ctx.max_attempts, "lease_token": ctx.lease_token,
               "start": start, "end": time.time(), "who": "official"}
        r.rpush(seen_key, json.dumps(rec))
        if isinstance(ctx.payload, dict) and ctx.payload.get("fail_once") and ctx.attempt == 1:
            raise RuntimeError("once")

    client.consume(queue=queue, handler=handler, poll_interval_s=0.01,
                   promote_interval_s=0.02, reap_interval_s=0.05)
    """)


def test_we_publish_official_consumer_consumes(
    shell_client: Client, redis_url: str, r: redis.Redis, qname: str, tmp_path: Path
) -> None:
    """The official consume loop (in a subprocess: it has no stop() and exits on SIGTERM)
    handles everything we published, and sees our payloads as we wrote them."""
    mix = publish_mix(shell_client.publish, qname)
    script_path = tmp_path / "official_consumer.py"
    script_path.write_text(_OFFICIAL_CONSUMER)
    err = tmp_path / "err.txt"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script_path), redis_url, qname, str(WORK_S)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until(
            lambda: states(r, qname, mix.ids) == ["completed"] * len(mix.ids)
            or proc.poll() is not None,
            "the official consumer to complete every job",
            timeout=WAIT_S,
        )
        assert proc.poll() is None, err.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    seen = [json.loads(raw) for raw in r.lrange(f"{{{qname}}}:test:seen", 0, -1)]
    r.delete(f"{{{qname}}}:test:seen")
    check_done(r, mix, seen)
    for rec in seen:
        assert rec["payload_raw"] == json.dumps(
            mix.payloads[rec["job_id"]], separators=(",", ":"), ensure_ascii=False
        )
        assert rec["max_attempts"] == (2 if rec["job_id"] == mix.flaky else 3)


def test_our_consumer_and_official_workers_share_a_queue(
    client: Client, oracle_on_ours: Any, r: redis.Redis, qname: str
) -> None:
    """Jobs from both producers, consumed at the same time by our Consumer and by the
    official client driven by hand (reserve / heartbeat / ack): group limits hold across
    the two, and a limit of 2 really lets one job run on each side at once."""
    mine = publish_mix(client.publish, qname)
    theirs_ids = [
        oracle_on_ours.publish(queue=qname, payload={"meet": i}, gid="m", group_limit=2)
        for i in range(2)
    ]
    meet = threading.Barrier(2, timeout=10)
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def work(job_id: str, gid: str, attempt: int, payload: Any, who: str) -> None:
        if isinstance(payload, dict) and "meet" in payload:
            meet.wait()  # both jobs of group "m" must be running, one on each side
        local: list[dict[str, Any]] = []
        try:
            record(local, job_id, gid, attempt, payload, who)
        finally:
            with lock:
                seen.extend(local)

    def handler(ctx: JobCtx) -> None:
        work(ctx.job_id, ctx.gid, ctx.attempt, ctx.payload, "ours")

    stop = threading.Event()
    official_errors: list[BaseException] = []

    def official_worker() -> None:
        oc = oracle_on_ours
        try:
            while not stop.is_set():
                oc.promote_delayed(queue=qname)
                oc.reap_expired(queue=qname)
                res = oc.reserve(queue=qname)
                if res is None or getattr(res, "status", "") != "JOB":
                    stop.wait(0.01)
                    continue
                assert oc.heartbeat(queue=qname, job_id=res.job_id, lease_token=res.lease_token) > 0
                try:
                    work(res.job_id, res.gid, res.attempt, json.loads(res.payload), "official")
                except RuntimeError as exc:
                    oc.ack_fail(
                        queue=qname,
                        job_id=res.job_id,
                        lease_token=res.lease_token,
                        error=f"RuntimeError: {exc}",
                    )
                else:
                    oc.ack_success(queue=qname, job_id=res.job_id, lease_token=res.lease_token)
        except BaseException as exc:  # reported by the test
            official_errors.append(exc)

    all_ids = mine.ids + theirs_ids
    consumer = Consumer(client, qname, handler, **POLL)
    threads = [
        threading.Thread(target=consumer.run, daemon=True),
        threading.Thread(target=official_worker, daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        wait_until(
            lambda: states(r, qname, all_ids) == ["completed"] * len(all_ids) or official_errors,
            "every job to complete",
            timeout=WAIT_S,
        )
    finally:
        stop.set()
        consumer.stop()
        for t in threads:
            t.join(10)
    assert not official_errors, official_errors
    assert not any(t.is_alive() for t in threads)
    met = [rec["who"] for rec in seen if rec["gid"] == "m"]
    assert sorted(met) == ["official", "ours"]
    mine.payloads.update({job_id: {"meet": i} for i, job_id in enumerate(theirs_ids)})
    # check_done counts every job of the queue: count the two meet jobs in.
    mine.plain.extend(theirs_ids)
    for rec in seen:
        if rec["gid"] == "m":
            rec["gid"] = ""  # check_done expects only a, b and ungrouped
    check_done(r, mine, seen)


# --------------------------------------------------------------------------- leases across


def test_official_lease_acked_by_us(
    shell_client: Client, oracle_on_ours: Any, r: redis.Redis, qname: str
) -> None:
    job_id = shell_client.publish(qname, {"x": 1}, timeout_ms=10000)
    res = oracle_on_ours.reserve(queue=qname)
    assert res.job_id == job_id
    lock_until = shell_client.heartbeat(qname, job_id, res.lease_token)
    assert lock_until >= res.lock_until_ms + 10000 - 1000  # extended from the old deadline
    assert job_hash(r, qname, job_id)["lock_until_ms"] == str(lock_until)
    with pytest.raises(TokenMismatch):
        shell_client.heartbeat(qname, job_id, res.lease_token + "x")
    shell_client.ack_success(qname, job_id, res.lease_token)
    h = job_hash(r, qname, job_id)
    assert h["state"] == "completed" and h["lease_token"] == ""
    # The lease is spent for both clients.
    with pytest.raises(RuntimeError):
        oracle_on_ours.ack_success(queue=qname, job_id=job_id, lease_token=res.lease_token)
    with pytest.raises(TokenMismatch):
        shell_client.ack_success(qname, job_id, res.lease_token)


def test_our_lease_acked_by_official(
    shell_client: Client, oracle_on_ours: Any, r: redis.Redis, qname: str
) -> None:
    job_id = oracle_on_ours.publish(queue=qname, payload={"x": 1}, max_attempts=2, backoff_ms=500)
    first = shell_client.reserve(qname)
    assert first is not None and first.job_id == job_id
    lock_until = oracle_on_ours.heartbeat(queue=qname, job_id=job_id, lease_token=first.lease_token)
    assert job_hash(r, qname, job_id)["lock_until_ms"] == str(lock_until)
    with pytest.raises(RuntimeError):
        oracle_on_ours.heartbeat(queue=qname, job_id=job_id, lease_token="not-the-token")
    outcome, due = oracle_on_ours.ack_fail(
        queue=qname, job_id=job_id, lease_token=first.lease_token, error="ValueError: first"
    )
    assert outcome == "RETRY" and due is not None
    assert shell_client.promote_delayed(qname, now_ms_override=due - 1) == 0
    assert shell_client.promote_delayed(qname, now_ms_override=due) == 1
    second = oracle_on_ours.reserve(queue=qname)
    assert second.job_id == job_id and second.attempt == 2
    with pytest.raises(TokenMismatch):  # our stale lease
        shell_client.ack_fail(qname, job_id, first.lease_token, error="stale")
    assert shell_client.ack_fail(qname, job_id, second.lease_token, error="ValueError: second") == (
        "FAILED",
        None,
    )
    h = job_hash(r, qname, job_id)
    assert h["state"] == "failed" and h["last_error"].partition("\n")[0] == "ValueError: second"
    assert r.lrange(f"{{{qname}}}:failed", 0, -1) == [job_id.encode()]
    with pytest.raises(TokenMismatch):  # a finished job has no lease left
        shell_client.ack_success(qname, job_id, second.lease_token)


# --------------------------------------------------------------------------- monitors


def _untag(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        return {k: _untag(v) for k, v in value[1].items()}
    if isinstance(value, list):
        return [_untag(item) for item in value]
    return value


def build_lanes(c: Any, queue: str, pause: bool) -> list[str]:
    """Jobs in every lane, made by one client through the official keyword API."""
    ids = []
    ids.append(c.publish(queue=queue, payload={"k": "failed"}, max_attempts=1))
    res = c.reserve(queue=queue)
    c.ack_fail(queue=queue, job_id=res.job_id, lease_token=res.lease_token, error="E: failed")
    ids.append(c.publish(queue=queue, payload={"k": "done"}, gid="g0"))
    res = c.reserve(queue=queue)
    c.ack_success(queue=queue, job_id=res.job_id, lease_token=res.lease_token)
    ids.append(c.publish(queue=queue, payload={"k": "retry"}, backoff_ms=60000))
    res = c.reserve(queue=queue)
    c.ack_fail(queue=queue, job_id=res.job_id, lease_token=res.lease_token, error="E: later")
    ids.append(c.publish(queue=queue, payload={"k": "active"}, gid="g1", group_limit=2))
    c.reserve(queue=queue)
    ids += [c.publish(queue=queue, payload={"k": "wait", "i": i}) for i in range(2)]
    ids += [c.publish(queue=queue, payload={"k": "gwait", "i": i}, gid="g1") for i in range(2)]
    ids.append(c.publish(queue=queue, payload={"k": "g2"}, gid="g2", group_limit=3))
    ids.append(c.publish(queue=queue, payload={"k": "delayed"}, due_ms=now_ms() + 60000))
    if pause:
        c.pause(queue=queue)
    return ids


def test_monitors_read_each_others_queues(
    client: Client, oracle_on_ours: Any, r: redis.Redis, qname: str
) -> None:
    from omniq.monitor import QueueMonitor as OfficialMonitor

    from omniq_fast.monitor import QueueMonitor

    ours_q, theirs_q = qname + "ours", qname + "theirs"
    ids = {
        ours_q: build_lanes(client, ours_q, pause=False),
        theirs_q: build_lanes(oracle_on_ours, theirs_q, pause=True),
    }
    official, mine = OfficialMonitor(oracle_on_ours), QueueMonitor(client)

    def same(call: Callable[[Any], Any]) -> Any:
        """``call`` on both monitors must give equal results; returns them as plain data."""
        theirs, ours = tagged(call(official)), tagged(call(mine))
        assert ours == theirs
        return _untag(ours)

    assert [q for q in same(lambda m: m.scan_queues()) if q.startswith(qname)] == sorted(ids)
    for q, job_ids in ids.items():
        stats = same(lambda m: m.stats(q))
        assert stats["paused"] == (q == theirs_q)
        assert stats["failed"] == stats["completed_kept"] == stats["active"] == 1
        assert stats["delayed"] == 2 and stats["waiting"] == 2 and stats["group_waiting"] == 3
        same(lambda m: m.stats_many([q, q]))
        overview = same(lambda m: m.overview(q))
        assert [len(overview[lane]) for lane in ("active", "delayed", "failed", "completed")] == [
            1,
            2,
            1,
            1,
        ]
        same(lambda m: m.overview(q, samples_per_lane=1))
        for lane in ("wait", "active", "delayed", "failed", "completed"):
            page = same(lambda m: m.lane_page(q, lane))
            assert page, lane
            same(lambda m: m.lane_page(q, lane, offset=1, limit=2, reverse=True))
            same(lambda m: m.find_jobs(q, lane, job_ids))
        assert same(lambda m: m.groups_ready(q)) == ["g1", "g2"]
        same(lambda m: m.groups_ready_with_scores(q))
        groups = same(lambda m: m.group_status(q, ["g0", "g1", "g2", "none"]))
        assert [(g["gid"], g["inflight"], g["limit"], g["waiting_count"]) for g in groups] == [
            ("g0", 0, 1, 0),
            ("g1", 1, 2, 2),
            ("g2", 0, 3, 1),
            ("none", 0, 1, 0),
        ]
        for job_id in job_ids + ["missing"]:
            same(lambda m: m.get_job(q, job_id))
        infos = [same(lambda m: m.get_job(q, job_id)) for job_id in job_ids]
        assert {info["state"] for info in infos} == {
            "failed",
            "completed",
            "delayed",
            "active",
            "wait",
        }
