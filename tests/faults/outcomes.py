"""What a consumer fault test checks from outside the client: a side log of handler runs
(kept by the handler itself, not by the client) against the keyspace of a private server."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import redis

__all__ = ["SideLog", "Tally", "tally", "wait_settled", "run_in_thread"]


class SideLog:
    """Runs recorded by the handler: ``job_id|attempt|token|outcome`` lines in a file
    (appended with one write each, so several processes may share it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()
        self._lock = threading.Lock()

    def record(self, job_id: str, attempt: int, token: str, outcome: str) -> None:
        line = f"{job_id}|{attempt}|{token}|{outcome}\n".encode()
        with self._lock, open(self.path, "ab") as f:
            f.write(line)

    def runs(self) -> dict[str, list[tuple[int, str, str]]]:
        out: dict[str, list[tuple[int, str, str]]] = {}
        for line in self.path.read_text().splitlines():
            job_id, attempt, token, outcome = line.split("|")
            out.setdefault(job_id, []).append((int(attempt), token, outcome))
        return out


class Tally:
    """Per fault class: jobs lost (neither completed nor failed), finished jobs that ran
    again, and the outcomes."""

    def __init__(self) -> None:
        self.lost: list[str] = []
        self.reran: list[str] = []
        self.completed = 0
        self.failed: set[str] = set()
        self.runs = 0

    def __repr__(self) -> str:
        return (f"Tally(lost={len(self.lost)}, finished_reran={len(self.reran)}, "
                f"completed={self.completed}, failed={len(self.failed)}, runs={self.runs})")  # fmt: skip


def _base(queue: str) -> str:
    return "{" + queue + "}"


def wait_settled(r: redis.Redis, queue: str, timeout: float) -> None:
    """Until nothing is waiting, delayed or active (bounded)."""
    base = _base(queue)
    deadline = time.monotonic() + timeout
    while True:
        try:
            pipe = r.pipeline()
            for lane in (":wait", ":delayed", ":active", ":groups:ready"):
                (pipe.llen if lane == ":wait" else pipe.zcard)(base + lane)
            if sum(pipe.execute()) == 0:
                return
        except redis.RedisError:
            pass  # the server may be restarting
        assert time.monotonic() < deadline, f"queue {queue} did not settle in {timeout} s"
        time.sleep(0.05)


def tally(r: redis.Redis, queue: str, ids: list[str], log: SideLog) -> Tally:
    """Read the outcome of every job and check the invariants every scenario shares: one
    run per lease, nothing left active, the stats hash agrees with the lanes."""
    base = _base(queue)
    runs = log.runs()
    t = Tally()
    t.failed = {x.decode() for x in r.lrange(base + ":failed", 0, -1)}
    for job_id in ids:
        mine = sorted(runs.get(job_id, []))
        t.runs += len(mine)
        tokens = [tok for _, tok, _ in mine]
        assert len(set(tokens)) == len(tokens), f"a lease ran twice: {job_id} {mine}"
        if job_id in t.failed:
            continue
        # Not failed and the lanes are empty: completed (its hash may be trimmed already:
        # only the last 100 completed jobs are kept). It must have run successfully, and
        # no run may follow its first success.
        t.completed += 1
        first_ok = next((i for i, (_, _, out) in enumerate(mine) if out == "ok"), None)
        if first_ok is None:
            t.lost.append(job_id)
        elif first_ok < len(mine) - 1:
            t.reran.append(job_id)
    stats = {k.decode(): int(v) for k, v in r.hgetall(base + ":stats").items()}
    assert stats.get("active", 0) == 0 == r.zcard(base + ":active"), stats
    assert stats.get("waiting", 0) == 0 == r.llen(base + ":wait"), stats
    assert stats.get("delayed", 0) == 0 == r.zcard(base + ":delayed"), stats
    assert stats.get("failed", 0) == r.llen(base + ":failed"), stats
    assert stats.get("completed_kept", 0) == r.llen(base + ":completed"), stats
    return t


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``target`` on a daemon thread; its result (or exception) lands in the list."""
    result: list[Any] = []

    def body() -> None:
        try:
            result.append(target())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, result


def stop_bounded(stop: Callable[[], None], thread: threading.Thread, timeout: float,
                 result: Optional[list[Any]] = None) -> None:  # fmt: skip
    """Ask to stop and assert it happened within ``timeout``."""
    stop()
    thread.join(timeout)
    assert not thread.is_alive(), f"consumer did not stop within {timeout} s"
    if result:
        assert not isinstance(result[0], BaseException), result[0]
