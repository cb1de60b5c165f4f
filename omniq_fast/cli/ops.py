"""Operator commands: look at queues and act on them (``queues``, ``stats``, ``pause``,
``resume``, ``retry-failed``, ``remove``, ``peek``, ``job``, ``groups``).

Reads go through :class:`~omniq_fast.QueueMonitor`, writes through
:class:`~omniq_fast.Client`; both route every queue to its master on a cluster.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Optional

import click
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .._engine import now_ms
from ..client import MAX_BATCH, Client
from ..keys import LANES, REMOVE_LANES
from ..monitor import LaneJob, QueueMonitor
from .options import CliError, connect, json_option, print_json, queue_argument, redis_url_option

__all__ = ["queues", "stats", "pause", "resume", "retry_failed", "remove", "peek", "job",
           "groups", "stats_rows"]  # fmt: skip

#: Most jobs ``peek`` lists (pages of 25 are read until then).
PEEK_MAX = 1000


def _console() -> Console:
    """stdout; piped output gets 160 columns (rich would cut tables at 80)."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def age(ms: Optional[int], now: int) -> str:
    """A short human age ("4.2s", "3m 05s", "2h 10m", "3d 4h") of the time ``ms``."""
    if not ms:
        return "-"
    seconds = max(0.0, (now - ms) / 1000)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24}h"


def iso(ms: int) -> str:
    """``ms`` since the epoch as UTC ISO 8601, or ``-`` when unset."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def stats_rows(monitor: QueueMonitor, names: Optional[list[str]]) -> list[dict[str, Any]]:
    """Each queue's stats (every queue found when ``names`` is None) with its oldest
    waiting job: ``oldest_waiting_ms`` (when it entered the lane) and its age in seconds."""
    all_stats = monitor.stats_many(names)
    oldest = monitor.oldest_waiting_ms([s.queue for s in all_stats])
    now = now_ms()
    rows = []
    for queue_stats, first in zip(all_stats, oldest):
        row = asdict(queue_stats)
        row["oldest_waiting_ms"] = first
        row["oldest_waiting_age_s"] = None if first is None else max(0, now - first) / 1000
        rows.append(row)
    return rows


def _stats_table(rows: list[dict[str, Any]], title: str) -> Table:
    now = now_ms()
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True,
                  pad_edge=False)  # fmt: skip
    # Short headers so ten columns fit 80 characters; the README says what each holds.
    for name in ("queue", "state", "waiting", "grouped", "active", "delayed", "failed",
                 "done", "groups", "oldest"):  # fmt: skip
        left = name in ("queue", "state")
        table.add_column(name, justify="left" if left else "right", no_wrap=left,
                         min_width=len(name))  # fmt: skip
    for row in rows:
        table.add_row(
            row["queue"], Text("paused", style="bold yellow") if row["paused"] else "running",
            str(row["waiting"]), str(row["group_waiting"]), str(row["active"]),
            str(row["delayed"]), Text(str(row["failed"]), style="red" if row["failed"] else ""),
            str(row["completed_kept"]), str(row["groups_ready"]),
            age(row["oldest_waiting_ms"], now),
        )  # fmt: skip
    return table


@click.command()
@redis_url_option
@json_option
def queues(redis_url: str, as_json: bool) -> int:
    """Every queue on the server with its counts."""
    with connect(redis_url) as client:
        rows = stats_rows(QueueMonitor(client), None)
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo("no queues")
    else:
        _console().print(_stats_table(rows, f"{len(rows)} queues"))
    return 0


@click.command()
@queue_argument("queue_names", nargs=-1)
@redis_url_option
@json_option
@click.option("--watch", is_flag=True, help="Keep the table on screen, updated live.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between updates with --watch.")
def stats(queue_names: tuple[str, ...], redis_url: str, as_json: bool, watch: bool,
          interval: float) -> int:  # fmt: skip
    """Counters of QUEUEs (every queue without any): lanes, groups, paused flag and the
    age of the oldest waiting job. --watch updates a live table (with --json: one JSON line
    per update) until Ctrl+C."""
    names = list(queue_names) or None
    with connect(redis_url) as client:
        monitor = QueueMonitor(client)
        if not watch:
            rows = stats_rows(monitor, names)
            if as_json:
                print_json(rows)
            else:
                _console().print(_stats_table(rows, "queues"))
            return 0
        try:
            if as_json:
                while True:
                    print_json(stats_rows(monitor, names), compact=True)
                    time.sleep(interval)

            def view() -> Group:
                stamp = datetime.now().strftime("%H:%M:%S")
                table = _stats_table(stats_rows(monitor, names), f"queues at {stamp}")
                return Group(table, Text(f"every {interval:g}s; Ctrl+C to stop", style="dim"))

            with Live(view(), auto_refresh=False, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(view(), refresh=True)
        except KeyboardInterrupt:
            return 0


@click.command()
@queue_argument()
@redis_url_option
@json_option
def pause(queue: str, redis_url: str, as_json: bool) -> int:
    """Stop QUEUE handing out jobs (running jobs go on)."""
    with connect(redis_url) as client:
        client.pause(queue)
    if as_json:
        print_json({"queue": queue, "paused": True})
    else:
        click.echo(f"paused {queue}")
    return 0


@click.command()
@queue_argument()
@redis_url_option
@json_option
def resume(queue: str, redis_url: str, as_json: bool) -> int:
    """Let QUEUE hand out jobs again."""
    with connect(redis_url) as client:
        was_paused = bool(client.resume(queue))
    if as_json:
        print_json({"queue": queue, "paused": False, "was_paused": was_paused})
    else:
        click.echo(f"resumed {queue}" if was_paused else f"{queue} was not paused")
    return 0


def _batched(client: Client, op: str, queue: str, ids: list[str], lane: str = "") -> tuple[list[str], list[dict[str, Any]]]:  # fmt: skip
    """Run a batch admin operation over ``ids`` (100 per call): the ids done, the refusals."""
    done: list[str] = []
    refused: list[dict[str, Any]] = []
    for i in range(0, len(ids), MAX_BATCH):
        chunk = ids[i : i + MAX_BATCH]
        if op == "retry":
            results = client.retry_failed_batch(queue, chunk)
        else:
            results = client.remove_jobs_batch(queue, lane, chunk)
        for item in results:
            if item.ok:
                done.append(item.job_id)
            else:
                refused.append({"job_id": item.job_id, "reason": item.reason})
    return done, refused


def _report(verb: str, queue: str, done: list[str], refused: list[dict[str, Any]],
            as_json: bool) -> int:  # fmt: skip
    if as_json:
        print_json({"queue": queue, verb: done, "refused": refused})
    else:
        click.echo(f"{verb} {len(done)} job{'s' if len(done) != 1 else ''} of {queue}")
        for item in refused:
            click.echo(f"  {item['job_id']}: {item['reason']}", err=True)
    return 1 if refused else 0


@click.command("retry-failed")
@queue_argument()
@click.argument("job_ids", nargs=-1, metavar="[ID...]")
@click.option("--all", "every", is_flag=True, help="Every failed job of the queue.")
@redis_url_option
@json_option
def retry_failed(queue: str, job_ids: tuple[str, ...], every: bool, redis_url: str,
                 as_json: bool) -> int:  # fmt: skip
    """Queue failed jobs of QUEUE again, attempts reset: the IDs given, or --all.
    Exits 1 if any id was refused (not failed, no such job)."""
    if every == bool(job_ids):
        raise click.UsageError("give job ids or --all (not both)")
    with connect(redis_url) as client:
        if job_ids:
            done, refused = _batched(client, "retry", queue, list(job_ids))
        else:
            monitor = QueueMonitor(client)
            done, refused = [], []
            # Retried jobs leave the failed index, so the first page is always the next;
            # a page that makes no progress (every id refused) ends the loop.
            while page := monitor.lane_page(queue, "failed", offset=len(refused), limit=25):
                ok, bad = _batched(client, "retry", queue, [j.job_id for j in page])
                done += ok
                refused += bad
    return _report("retried", queue, done, refused, as_json)


@click.command()
@queue_argument()
@click.argument("lane", type=click.Choice(sorted(REMOVE_LANES)))
@click.argument("job_ids", nargs=-1, required=True, metavar="ID...")
@redis_url_option
@json_option
def remove(queue: str, lane: str, job_ids: tuple[str, ...], redis_url: str, as_json: bool) -> int:
    """Delete jobs of QUEUE that wait in LANE (gwait: grouped waiting jobs); running jobs
    cannot be removed. Exits 1 if any id was refused."""
    with connect(redis_url) as client:
        done, refused = _batched(client, "remove", queue, list(job_ids), lane)
    return _report("removed", queue, done, refused, as_json)


def _short(text: str, width: int) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 1] + "…"


@click.command()
@queue_argument()
@click.argument("lane", type=click.Choice(LANES))
@click.option("--limit", type=click.IntRange(1, PEEK_MAX), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--newest", is_flag=True, help="Newest first (default: oldest first).")
@redis_url_option
@json_option
def peek(queue: str, lane: str, limit: int, offset: int, newest: bool, redis_url: str,
         as_json: bool) -> int:  # fmt: skip
    """Jobs of QUEUE in LANE, in the order they entered it, with their payloads."""
    with connect(redis_url) as client:
        monitor = QueueMonitor(client)
        jobs: list[LaneJob] = []
        while len(jobs) < limit:
            page = monitor.lane_page(queue, lane, offset=offset + len(jobs),  # type: ignore[arg-type]
                                     limit=min(25, limit - len(jobs)), reverse=newest)  # fmt: skip
            if not page:
                break
            jobs += page
        infos = monitor.get_jobs(queue, [j.job_id for j in jobs])
    payloads = [info.payload if info is not None else "" for info in infos]
    if as_json:
        print_json([{**asdict(j), "payload": p} for j, p in zip(jobs, payloads)])
        return 0
    now = now_ms()
    table = Table(title=f"{queue} {lane}: {len(jobs)} jobs from #{offset}", title_justify="left",
                  box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)  # fmt: skip
    table.add_column("id", no_wrap=True, min_width=26)
    table.add_column("entered", no_wrap=True, min_width=10)
    table.add_column("gid", no_wrap=True, max_width=20, min_width=3)
    table.add_column("attempt", no_wrap=True, min_width=7)
    table.add_column("payload", no_wrap=True, max_width=50, min_width=7)
    table.add_column("last error", no_wrap=True, max_width=40, min_width=10)
    for j, payload in zip(jobs, payloads):
        table.add_row(j.job_id, age(j.idx_score_ms, now) + " ago", j.gid or "-",
                      f"{j.attempt}/{j.max_attempts}", _short(payload, 50),
                      _short(j.last_error, 40) or "-")  # fmt: skip
    _console().print(table)
    return 0


@click.command()
@queue_argument()
@click.argument("job_id", metavar="ID")
@redis_url_option
@json_option
def job(queue: str, job_id: str, redis_url: str, as_json: bool) -> int:
    """Everything about one job of QUEUE: payload, attempts, times, last error with its
    traceback."""
    with connect(redis_url) as client:
        info = QueueMonitor(client).get_job(queue, job_id)
    if info is None:
        raise CliError(f"no job {job_id!r} in queue {queue!r} (completed jobs are kept 100)")
    if as_json:
        print_json(asdict(info))
        return 0
    now = now_ms()
    table = Table(show_header=False, title=f"job {job_id} of {queue}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("state", info.state)
    table.add_row("group", info.gid or "-")
    table.add_row("attempt", f"{info.attempt} of {info.max_attempts}")
    table.add_row("timeout / backoff", f"{info.timeout_ms} ms / {info.backoff_ms} ms")
    for name in ("created_ms", "queued_ms", "first_started_ms", "last_started_ms", "due_ms",
                 "lock_until_ms", "completed_ms", "failed_ms", "updated_ms"):  # fmt: skip
        value = getattr(info, name)
        if value:
            when = age(value, now) + " ago" if value <= now else "in " + age(now, value)
            table.add_row(name[:-3].replace("_", " "), f"{iso(value)} ({when})")
    console = _console()
    console.print(table)
    try:
        shown = json.dumps(json.loads(info.payload), indent=2, ensure_ascii=False)
    except ValueError:
        shown = info.payload
    console.print("[bold]payload[/bold]")
    console.print(shown, markup=False, highlight=False)
    if info.last_error:
        console.print(f"[bold]last error[/bold] ({iso(info.last_error_ms)})")
        console.print(info.last_error, markup=False, highlight=False)
    return 0


@click.command()
@queue_argument()
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Most groups shown (busiest first).")
@redis_url_option
@json_option
def groups(queue: str, limit: int, redis_url: str, as_json: bool) -> int:
    """The groups of QUEUE: jobs in flight, limit, jobs waiting, whether ready."""
    with connect(redis_url) as client:
        monitor = QueueMonitor(client)
        found = monitor.scan_groups(queue)
        statuses = monitor.group_status(queue, found)
    statuses.sort(key=lambda g: (-g.waiting_count - g.inflight, g.gid))
    shown = statuses[:limit]
    if as_json:
        print_json([asdict(g) for g in shown])
        return 0
    table = Table(title=f"{queue}: {len(shown)} of {len(statuses)} groups", title_justify="left")
    for name in ("group", "in flight", "limit", "waiting", "ready"):
        table.add_column(name, justify="left" if name == "group" else "right")
    for g in shown:
        table.add_row(g.gid, str(g.inflight), str(g.limit), str(g.waiting_count),
                      "yes" if g.ready else "no")  # fmt: skip
    _console().print(table)
    return 0
