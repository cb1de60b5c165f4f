"""Server CPU per job: the official client's single scripts against our batched scripts.

Runs, on fresh queues of a real server (default redis://127.0.0.1:6379/13):

* enqueue: N official ``publish`` calls (one EVALSHA each) against our ``enqueue_batch``
  in batches of ``--batch`` jobs;
* reserve + ack_success: N official ``reserve`` + ``ack_success`` pairs against our
  ``reserve_batch`` + ``ack_success_batch`` per batch;

and reports the server time Redis accounts to the scripts (``INFO commandstats``:
``cmdstat_evalsha`` plus ``cmdstat_eval`` usec, deltas around each phase) per job, side by
side: the median of ``--repeat`` alternating measurements of each. The call counts are
checked too: a phase during which another client ran scripts on the same server is
repeated on a fresh queue rather than reported with a wrong number.

    python benchmarks/server_cpu_scripts.py [--url redis://127.0.0.1:6379/13] [--jobs 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from typing import Any, Callable
from urllib.parse import urlsplit

import redis

from omniq_fast._scripts import script


def script_stats(r: redis.Redis) -> tuple[int, int]:
    """(calls, usec) of EVALSHA + EVAL so far."""
    stats = r.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        calls += int(stats.get(name, {}).get("calls", 0))
        usec += int(stats.get(name, {}).get("usec", 0))
    return calls, usec


class Busy(Exception):
    """Another client ran scripts during a measurement."""


def measure(r: redis.Redis, expected_calls: int, work: Callable[[], Any]) -> float:
    """Server script usec spent by ``work``, which must make ``expected_calls`` calls."""
    calls0, usec0 = script_stats(r)
    work()
    calls1, usec1 = script_stats(r)
    if calls1 - calls0 != expected_calls:
        raise Busy(f"expected {expected_calls} script calls, the server counted "
                   f"{calls1 - calls0}")
    return float(usec1 - usec0)


def delete_queue(r: redis.Redis, queue: str) -> None:
    keys = list(r.scan_iter(match="{" + queue + "}*", count=1000))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i:i + 1000])


class Ours:
    """Our batched scripts through plain EVALSHA (loaded once, before measuring)."""

    NAMES = ("enqueue_batch", "reserve_batch", "ack_success_batch")

    def __init__(self, r: redis.Redis, queue: str) -> None:
        self.r, self.anchor = r, "{" + queue + "}:meta"

    @classmethod
    def load(cls, r: redis.Redis) -> None:
        for name in cls.NAMES:
            r.script_load(script(name).source)

    def run(self, name: str, *argv: Any) -> Any:
        return self.r.evalsha(script(name).sha.decode(), 1, self.anchor, *argv)

    def enqueue(self, jobs: int, batch: int) -> None:
        now = int(time.time() * 1000)
        for start in range(0, jobs, batch):
            argv: list[Any] = [now, min(batch, jobs - start)]
            for i in range(start, min(start + batch, jobs)):
                payload = json.dumps({"i": i}, separators=(",", ":"))
                argv += [f"job-{i:08d}", payload, 3, 30000, 5000, 0, "", 0]
            self.run("enqueue_batch", *argv)

    def reserve_and_ack(self, jobs: int, batch: int) -> int:
        done = 0
        while done < jobs:
            now = int(time.time() * 1000)
            reply = self.run("reserve_batch", now, batch)
            if reply[0] != b"JOB":
                raise SystemExit(f"reserve_batch answered {reply[0]!r} after {done} jobs")
            k = int(reply[1])
            fields = reply[2:]
            argv: list[Any] = [now, k]
            for j in range(k):
                argv += [fields[7 * j], fields[7 * j + 6]]
            results = self.run("ack_success_batch", *argv)
            if results.count(b"OK") != k:
                raise SystemExit("ack_success_batch refused a lease")
            done += k
        return done


def official_client(url: str) -> Any:
    from omniq.client import OmniqClient

    parts = urlsplit(url)
    path = parts.path.strip("/")
    return OmniqClient(host=parts.hostname or "127.0.0.1", port=parts.port or 6379,
                       db=int(path) if path else 0, username=parts.username,
                       password=parts.password)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3,
                        help="measurements per phase and side (the median is reported)")
    parser.add_argument("--attempts", type=int, default=10,
                        help="tries per phase while other clients run scripts")
    args = parser.parse_args()
    jobs, batch = args.jobs, args.batch

    r = redis.Redis.from_url(args.url)
    official = official_client(args.url)
    tag = uuid.uuid4().hex[:8]
    queues: list[str] = []

    def fresh(side: str) -> str:
        queues.append(f"bench-{side}-{tag}-{len(queues)}")
        return queues[-1]

    def official_enqueue(queue: str) -> None:
        for i in range(jobs):
            official.publish(queue=queue, payload={"i": i}, job_id=f"job-{i:08d}")

    def official_reserve_and_ack(queue: str) -> None:
        for _ in range(jobs):
            job = official.reserve(queue=queue)
            official.ack_success(queue=queue, job_id=job.job_id, lease_token=job.lease_token)

    def phase(expected_calls: int, setup: Callable[[str], Any], work: Callable[[str], Any],
              side: str) -> float:
        # A phase some other client's scripts ran into is repeated on a fresh queue.
        for attempt in range(args.attempts):
            queue = fresh(side)
            setup(queue)
            try:
                return measure(r, expected_calls, lambda: work(queue))
            except Busy as exc:
                print(f"  {side}: {exc} (another client); attempt {attempt + 1}", flush=True)
            finally:
                delete_queue(r, queue)
        raise SystemExit("the server stayed busy with other clients' scripts; rerun later")

    batches = -(-jobs // batch)
    try:
        # Warm-up: load every script the phases use, outside the measurements.
        warm = fresh("warm")
        official.publish(queue=warm, payload={"w": 1})
        job = official.reserve(queue=warm)
        official.ack_success(queue=warm, job_id=job.job_id, lease_token=job.lease_token)
        Ours.load(r)

        def nothing(queue: str) -> None:
            pass

        # Official and ours alternate, `repeat` times each; the median of each is reported,
        # which keeps a burst of load from other processes out of the ratio.
        samples: dict[str, list[list[float]]] = {"enqueue": [[], []],
                                                 "reserve + ack_success": [[], []]}
        for _ in range(args.repeat):
            enqueue, reserve_ack = samples["enqueue"], samples["reserve + ack_success"]
            enqueue[0].append(phase(jobs, nothing, official_enqueue, "official"))
            enqueue[1].append(phase(batches, nothing,
                                    lambda q: Ours(r, q).enqueue(jobs, batch), "ours"))
            reserve_ack[0].append(phase(2 * jobs, official_enqueue, official_reserve_and_ack,
                                        "official"))
            reserve_ack[1].append(phase(2 * batches, lambda q: Ours(r, q).enqueue(jobs, batch),
                                        lambda q: Ours(r, q).reserve_and_ack(jobs, batch),
                                        "ours"))
        rows = [(name, statistics.median(theirs), statistics.median(ours))
                for name, (theirs, ours) in samples.items()]
    finally:
        for queue in queues:
            delete_queue(r, queue)
        official.close()

    print(f"server script time per job (median of {args.repeat}), {jobs} jobs, "
          f"our batches of {batch} "
          f"({r.info('server').get('redis_version')} at {args.url})")
    print(f"{'operation':24} {'official µs/job':>16} {'ours µs/job':>12} {'ours/official':>14}")
    for name, theirs_usec, ours_usec in rows:
        print(f"{name:24} {theirs_usec / jobs:16.2f} {ours_usec / jobs:12.2f} "
              f"{ours_usec / theirs_usec:13.0%}")


if __name__ == "__main__":
    main()
