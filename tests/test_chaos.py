"""Chaos: consumer processes SIGKILLed and restarted at random while they work a queue.

At the end every job is completed or failed exactly as its attempts allow, no lease was
handed out twice, no job ran after a success was recorded for its last attempt, no job id
is lost, and the stats hash agrees with the lanes. CI runs a small size;
``OMNIQ_FAST_CHAOS_JOBS=20000`` runs the full one. The consumer processes run either shell
(ids ``sync``/``async``): a killed ``AsyncConsumer`` must lose nothing either.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from types import ModuleType

import pytest
import redis

from omniq_fast import Client

JOBS = int(os.environ.get("OMNIQ_FAST_CHAOS_JOBS", "1200"))
CONSUMERS = 3
MAX_ATTEMPTS = 4
DEADLINE_S = float(os.environ.get("OMNIQ_FAST_CHAOS_DEADLINE_S", "150"))

_CONSUMER = textwrap.dedent(
    """
    import sys, zlib, redis
    from shells import run_consumer

    url, queue, core_name, shell = sys.argv[1:5]
    r = redis.Redis.from_url(url)
    log = "{" + queue + "}:chaos:log"

    def handler(ctx):
        # Fails about one attempt in six, the same way for the same (job, attempt).
        fail = zlib.crc32(f"{ctx.job_id}:{ctx.attempt}".encode()) % 6 == 0
        r.rpush(log, f"{ctx.job_id}|{ctx.attempt}|{ctx.lease_token}|{'fail' if fail else 'ok'}")
        if fail:
            raise RuntimeError("chaos")

    run_consumer(shell, url, core_name, queue, handler, concurrency=4, poll_interval_s=0.02,
                 promote_interval_s=0.1, reap_interval_s=0.2)
    """
)


def _done(r: redis.Redis, base: str) -> bool:
    pipe = r.pipeline()
    pipe.llen(base + ":wait")
    pipe.zcard(base + ":delayed")
    pipe.zcard(base + ":active")
    pipe.zcard(base + ":groups:ready")
    return sum(pipe.execute()) == 0


@pytest.mark.slow
@pytest.mark.parametrize("consumer_shell", ["sync", "async"])
def test_consumers_killed_at_random_lose_nothing(
    redis_url: str, core: ModuleType, r: redis.Redis, qname: str, tmp_path: Path,
    consumer_shell: str,
) -> None:
    base = "{" + qname + "}"
    with Client(redis_url, _core=core) as client:
        ids = client.publish_many(
            qname,
            ({"i": i} for i in range(JOBS)),
            max_attempts=MAX_ATTEMPTS,
            timeout_ms=2000,
            backoff_ms=20,
        )
        # Some grouped jobs too: group slots must come back when their holder dies.
        grouped = client.publish_many(
            qname, ({"g": i} for i in range(JOBS // 10)), gid="g1", group_limit=2,
            max_attempts=MAX_ATTEMPTS, timeout_ms=2000, backoff_ms=20,
        )  # fmt: skip
    all_ids = set(ids) | set(grouped)
    script = tmp_path / "consumer.py"
    script.write_text(_CONSUMER)
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    argv = [sys.executable, str(script), redis_url, qname, core.__name__, consumer_shell]
    rng = random.Random(7)
    procs = [subprocess.Popen(argv, env=env) for _ in range(CONSUMERS)]
    kills = 0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not _done(r, base):
            assert time.monotonic() < deadline, "chaos run did not finish in time"
            time.sleep(rng.uniform(0.1, 0.5))
            if kills < 12:
                victim = rng.randrange(len(procs))
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                procs[victim] = subprocess.Popen(argv, env=env)
                kills += 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    runs: dict[str, list[tuple[int, str, str]]] = {}
    for entry in r.lrange(base + ":chaos:log", 0, -1):
        job_id, attempt, token, outcome = entry.decode().split("|")
        runs.setdefault(job_id, []).append((int(attempt), token, outcome))
    failed = {x.decode() for x in r.lrange(base + ":failed", 0, -1)}
    assert failed <= all_ids

    for job_id in all_ids:
        mine = sorted(runs.get(job_id, []))
        attempts = [a for a, _, _ in mine]
        tokens = [t for _, t, _ in mine]
        # One run per lease: a lease is never handed out twice.
        assert len(set(tokens)) == len(tokens) and len(set(attempts)) == len(attempts), mine
        assert all(1 <= a <= MAX_ATTEMPTS for a in attempts), mine
        if job_id in failed:
            # Failed only once its attempts were used up. Its last run may even have
            # succeeded: a consumer killed between the handler's return and the ack leaves
            # the lease to expire, and the reaper counts that attempt as failed.
            h = r.hget(base + ":job:" + job_id, "attempt")
            assert h is not None and int(h) == MAX_ATTEMPTS, (job_id, h, mine)
        else:
            # Completed: its last run succeeded, and nothing ran after it.
            assert mine, f"job {job_id} never ran yet is not failed"
            assert mine[-1][2] == "ok", mine

    stats = {k.decode(): int(v) for k, v in r.hgetall(base + ":stats").items()}
    assert stats.get("waiting_total", 0) == 0 and stats.get("waiting", 0) == 0
    assert stats.get("group_waiting", 0) == 0
    assert stats.get("active", 0) == 0 == r.zcard(base + ":active")
    assert stats.get("delayed", 0) == 0 == r.zcard(base + ":delayed")
    assert stats.get("failed", 0) == len(failed)
    assert stats.get("completed_kept", 0) == r.llen(base + ":completed")
    assert r.get(base + ":g:g1:inflight") in (None, b"0")
    assert kills > 0
