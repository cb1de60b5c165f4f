"""``omniq-fast exporter``: queue gauges for Prometheus, read from the server at each scrape
(needs the ``metrics`` extra).

:class:`QueueCollector` reads through :class:`~omniq_fast.monitor.QueueMonitor` (four round
trips per scrape whatever the number of queues; on a Redis Cluster the reads go to each
queue's master and the scan covers every master):

* ``omniq_queue_jobs{queue,lane}``: jobs per lane, from the queue's stats: ``wait``
  (ungrouped, ready), ``gwait`` (in a group's list, ready), ``active`` (leased),
  ``delayed`` (due later, or waiting out a retry backoff), ``failed``, ``completed`` (the
  completed jobs kept, at most 100);
* ``omniq_queue_paused{queue}``: 1 while the queue is paused;
* ``omniq_queue_oldest_waiting_seconds{queue}``: how long the longest-waiting ready job
  has waited (0 when none waits);
* ``omniq_queue_groups_ready{queue}``: groups that can hand out a job now;
* ``omniq_group_jobs{queue,state}``: jobs of groups, summed over the groups (no per-group
  label): ``waiting`` and ``active`` (leased);
* ``omniq_exporter_server_up``: 1 if the last scrape could read the server, else 0 (and
  the queue gauges are left out);
* ``omniq_exporter_scrape_duration_seconds``: how long the reads of the last scrape took.

Without QUEUE arguments every queue found by a scan (a ``{Q}:stats`` hash) is exported,
found again at each scrape.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Iterator, Optional, Sequence

import click
import redis

from .cli.options import queue_argument, redis_url_option
from .client import Client
from .errors import MissingExtra, OmniqError
from .keys import validate_queue_name
from .monitor import QueueMonitor

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingExtra("metrics", "metrics") from exc

__all__ = ["QueueCollector", "exporter", "DEFAULT_PORT"]

log = logging.getLogger("omniq_fast.exporter")

#: Port served when ``--port`` is not given.
DEFAULT_PORT = 9839
#: Errors that mean the server could not be read (a scrape then reports it down).
_READ_ERRORS = (redis.RedisError, OSError, OmniqError)


class QueueCollector(Collector):
    """Collects the queue gauges (see the module docstring) from ``monitor`` at each
    scrape: for ``queues``, or every queue :meth:`QueueMonitor.scan_queues` finds."""

    def __init__(self, monitor: QueueMonitor, queues: Optional[Sequence[str]] = None) -> None:
        self.monitor = monitor
        self.queues = None if queues is None else [validate_queue_name(q) for q in queues]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        try:
            families = self._read()
            up = 1.0
        except _READ_ERRORS as exc:
            log.warning("could not read the queues: %s", exc)
            families, up = [], 0.0
        yield from families
        yield GaugeMetricFamily(
            "omniq_exporter_server_up", "1 if the last scrape could read the server.", up
        )
        yield GaugeMetricFamily(
            "omniq_exporter_scrape_duration_seconds", "How long the last scrape's reads took.",
            time.perf_counter() - started,
        )  # fmt: skip

    def _read(self) -> list[GaugeMetricFamily]:
        monitor = self.monitor
        names = monitor.scan_queues() if self.queues is None else self.queues
        stats = monitor.stats_many(names)
        ages = monitor.oldest_waiting_ages_ms(names)
        grouped_active = monitor.grouped_active_many(names)
        jobs = GaugeMetricFamily(
            "omniq_queue_jobs", "Jobs in each lane of the queue.", labels=["queue", "lane"]
        )
        paused = GaugeMetricFamily(
            "omniq_queue_paused", "1 while the queue is paused.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "omniq_queue_oldest_waiting_seconds",
            "How long the longest-waiting ready job has waited.", labels=["queue"],
        )  # fmt: skip
        groups_ready = GaugeMetricFamily(
            "omniq_queue_groups_ready", "Groups that can hand out a job now.", labels=["queue"]
        )
        group_jobs = GaugeMetricFamily(
            "omniq_group_jobs", "Jobs of groups, summed over the groups, by state.",
            labels=["queue", "state"],
        )  # fmt: skip
        for st, age_ms, active in zip(stats, ages, grouped_active):
            q = st.queue
            for lane, count in (
                ("wait", st.waiting), ("gwait", st.group_waiting), ("active", st.active),
                ("delayed", st.delayed), ("failed", st.failed), ("completed", st.completed_kept),
            ):  # fmt: skip
                jobs.add_metric([q, lane], count)
            paused.add_metric([q], 1 if st.paused else 0)
            oldest.add_metric([q], age_ms / 1000.0)
            groups_ready.add_metric([q], st.groups_ready)
            group_jobs.add_metric([q, "waiting"], st.group_waiting)
            group_jobs.add_metric([q, "active"], active)
        return [jobs, paused, oldest, groups_ready, group_jobs]


@click.command("exporter")
@redis_url_option
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
    help="The port to serve /metrics on.",
)  # fmt: skip
@click.option("--host", default="0.0.0.0", show_default=True, help="The address to bind.")
@queue_argument("queues", nargs=-1)
def exporter(redis_url: str, port: int, host: str, queues: tuple[str, ...]) -> None:
    """Serve queue gauges for Prometheus, read from the server at each scrape.

    Exports QUEUE... or, without any, every queue found on the server (at each scrape).
    Stops on Ctrl+C (exit 130) or SIGTERM.
    """
    try:
        client = Client(redis_url)
        monitor = QueueMonitor(client)  # asks the server whether it is a cluster
        found = len(queues) if queues else len(monitor.scan_queues())
    except (*_READ_ERRORS, ValueError) as exc:  # ValueError: a malformed URL
        raise click.ClickException(f"cannot read {redis_url}: {exc}") from None
    registry = CollectorRegistry()
    registry.register(QueueCollector(monitor, queues or None))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc}") from None
    which = f"{found} queue{'s' * (found != 1)}" if queues else f"every queue ({found} now)"
    click.echo(f"omniq-fast exporter: {which} on http://{host}:{port}/metrics", err=True)
    try:
        threading.Event().wait()  # the server runs on its own thread until the end
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        client.close()


if __name__ == "__main__":  # pragma: no cover - run as `python -m omniq_fast.exporter`
    exporter(prog_name="omniq-fast exporter")
