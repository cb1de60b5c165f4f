"""``publish`` (JSON lines into a queue) and ``bench`` (publish and consume on a server)."""

from __future__ import annotations

import json
import time
import uuid
from typing import IO, Any, Iterator, Optional

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import PublishManyError
from ..client import Client, now_ms
from ..consumer import Consumer
from ..keys import queue_base
from .options import CliError, connect, json_option, print_json, queue_argument, redis_url_option

__all__ = ["publish", "bench", "parse_line"]

#: Bad lines listed before the rest are only counted.
_BAD_LINES_SHOWN = 20


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_line(number: int, line: str) -> Any:
    """The payload of one line (``None`` for a blank line); ``ValueError`` naming the line
    number if it is not a JSON object or array (NaN and Infinity are not JSON)."""
    if not line.strip():
        return None
    try:
        payload = json.loads(line, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ValueError(f"line {number}: not JSON ({exc})") from None
    if not isinstance(payload, (dict, list)):
        raise ValueError(f"line {number}: a payload must be a JSON object or array, "
                         f"not {type(payload).__name__}")  # fmt: skip
    return payload


def read_payloads(lines: list[str]) -> Iterator[Any]:
    """The payload of each non-blank line (lines are checked by :func:`_check_all` first)."""
    for number, line in enumerate(lines, 1):
        payload = parse_line(number, line)
        if payload is not None:
            yield payload


def _check_all(lines: list[str]) -> int:
    """How many payloads ``lines`` hold; every bad line reported (and none written)."""
    bad: list[str] = []
    count = 0
    for number, line in enumerate(lines, 1):
        try:
            count += parse_line(number, line) is not None
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        for message in bad[:_BAD_LINES_SHOWN]:
            click.echo(message, err=True)
        if len(bad) > _BAD_LINES_SHOWN:
            click.echo(f"... and {len(bad) - _BAD_LINES_SHOWN} more bad lines", err=True)
        raise CliError(f"{len(bad)} bad line{'s' if len(bad) > 1 else ''}: nothing was published")
    return count


@click.command()
@queue_argument()
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-", metavar="[FILE|-]")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--timeout-ms", type=click.IntRange(min=1), default=30000, show_default=True)
@click.option("--backoff-ms", type=click.IntRange(min=0), default=5000, show_default=True)
@click.option("--delay-ms", type=click.IntRange(min=0), default=0, show_default=True,
              help="Run the jobs this long from now.")
@click.option("--gid", default=None, help="Put every job in this group.")
@click.option("--group-limit", type=click.IntRange(min=0), default=0, show_default=True)
@redis_url_option
@json_option
def publish(queue: str, source: IO[str], max_attempts: int, timeout_ms: int, backoff_ms: int,
            delay_ms: int, gid: Optional[str], group_limit: int, redis_url: str,
            as_json: bool) -> int:  # fmt: skip
    """Publish one job per line of FILE (stdin by default), each line a JSON object or
    array. Every line is checked first: with any bad line nothing is published."""
    lines = source.readlines()
    total = _check_all(lines)
    with connect(redis_url) as client:
        console = Console(stderr=True)
        progress = Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console,
                            disable=as_json or not console.is_terminal)  # fmt: skip
        task = progress.add_task("publish", total=total)

        def payloads() -> Iterator[Any]:
            for payload in read_payloads(lines):
                yield payload
                progress.advance(task)

        due_ms = now_ms() + delay_ms if delay_ms else 0  # the client's clock, as publish uses
        started = time.perf_counter()
        try:
            with progress:
                ids = client.publish_many(
                    queue, payloads(), max_attempts=max_attempts, timeout_ms=timeout_ms,
                    backoff_ms=backoff_ms, due_ms=due_ms, gid=gid, group_limit=group_limit,
                )  # fmt: skip
        except PublishManyError as exc:
            raise CliError(f"published {len(exc.written)} of {total} jobs, then: {exc.__cause__}; "
                           f"{len(exc.unknown)} more may or may not be queued") from None  # fmt: skip
    seconds = time.perf_counter() - started
    if as_json:
        print_json({"queue": queue, "published": len(ids), "seconds": round(seconds, 3)})
    else:
        click.echo(f"published {len(ids)} jobs to {queue} in {seconds:.2f} s")
    return 0


def _delete_queue(client: Client, queue: str) -> None:
    """Remove every key of a bench queue (they share one slot, so one node holds them)."""
    r = client.redis
    keys = list(r.scan_iter(match=queue_base(queue) + "*", count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])


@click.command()
@click.option("--jobs", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--payload-bytes", type=click.IntRange(min=0), default=100, show_default=True)
@redis_url_option
@json_option
def bench(jobs: int, concurrency: int, payload_bytes: int, redis_url: str, as_json: bool) -> int:
    """Publish JOBS jobs to a fresh queue, consume them with a no-op handler, print jobs/s
    for each half; the queue is deleted afterwards."""
    queue = "omniq-fast-bench-" + uuid.uuid4().hex[:8]
    payload = {"data": "x" * payload_bytes}
    with connect(redis_url) as client:
        try:
            started = time.perf_counter()
            client.publish_many(queue, (payload for _ in range(jobs)))
            publish_s = time.perf_counter() - started
            started = time.perf_counter()
            stats = Consumer(client, queue, lambda ctx: None, max_jobs=jobs,
                             concurrency=concurrency).run()  # fmt: skip
            consume_s = time.perf_counter() - started
            cluster = client.is_cluster
        finally:
            _delete_queue(client, queue)
    result = {
        "jobs": jobs, "concurrency": concurrency, "payload_bytes": payload_bytes,
        "cluster": cluster,
        "publish_s": round(publish_s, 3), "publish_jobs_per_s": round(jobs / publish_s),
        "consume_s": round(consume_s, 3), "consume_jobs_per_s": round(stats.succeeded / consume_s),
        "succeeded": stats.succeeded,
    }  # fmt: skip
    if as_json:
        print_json(result)
    else:
        click.echo(f"publish: {jobs} jobs in {publish_s:.2f} s = {result['publish_jobs_per_s']:,} jobs/s")
        click.echo(f"consume: {stats.succeeded} jobs in {consume_s:.2f} s = "
                   f"{result['consume_jobs_per_s']:,} jobs/s (concurrency {concurrency})")  # fmt: skip
    return 0 if stats.succeeded == jobs else 1
