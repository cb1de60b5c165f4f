"""Prometheus metrics of a worker (needs the ``metrics`` extra: ``prometheus_client``).

:class:`WorkerMetrics` is a :class:`~omniq_fast.observe.ConsumerObserver`: pass it as a
consumer's ``observer=`` and it keeps, per queue,

* ``omniq_jobs_total{queue,outcome}`` (counter): jobs by outcome: ``completed``,
  ``failed``, ``retried``, ``lease_lost``, ``released`` (see :mod:`omniq_fast.observe`);
* ``omniq_job_duration_seconds{queue}`` (histogram): handler run time of every job that ran;
* ``omniq_job_pickup_delay_seconds{queue}`` (histogram): from the job's creation to its
  handler starting, first attempts only (:func:`pickup_delay_s` has the exact rule);
* ``omniq_jobs_in_flight{queue}`` (gauge): jobs whose handler started and whose outcome is
  not known yet (running, or their ack on its way);
* ``omniq_worker_up`` (gauge): 1 while the worker runs; summed over the live processes of a
  multi-process worker, so there it counts them.

:func:`serve_worker_metrics` serves them for a single-process worker. Under a supervisor of
N processes, Prometheus' multiprocess mode is used: the supervisor calls
:func:`prepare_multiprocess` before starting its children (they inherit
``PROMETHEUS_MULTIPROC_DIR``), each child makes its ``WorkerMetrics()`` as usual, the
supervisor serves the sum with :func:`serve_multiprocess_metrics` and calls
:func:`mark_process_dead` when a child exits (its gauges then leave the sum).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
import time
from typing import Any, Optional

from ._context import JobCtx
from .errors import MissingExtra, OmniqError
from .observe import OUTCOMES, Outcome

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client import multiprocess, start_http_server, values
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingExtra("metrics", "metrics") from exc

__all__ = [
    "WorkerMetrics",
    "serve_worker_metrics",
    "prepare_multiprocess",
    "serve_multiprocess_metrics",
    "mark_process_dead",
    "pickup_delay_s",
    "MultiprocessNotPrepared",
    "DURATION_BUCKETS",
    "PICKUP_DELAY_BUCKETS",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Handler times: from sub-millisecond handlers (the consumer's speciality) to minutes.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
#: Pickup delays: from a worker that keeps up (milliseconds) to a backlog of an hour.
PICKUP_DELAY_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip

_ULID_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}\Z", re.IGNORECASE)
#: Crockford's base32 digits to the ones ``int(..., 32)`` reads (0-9, A-V).
_TO_BASE32 = str.maketrans("ABCDEFGHJKMNPQRSTVWXYZ", "ABCDEFGHIJKLMNOPQRSTUV")
#: A ULID time before this (2017-07-14) or more than this far ahead is no creation time:
#: the id was chosen by the caller, not generated.
_PLAUSIBLE_SINCE_MS = 1_500_000_000_000
_FUTURE_SLACK_MS = 60_000


def _ulid_ms(job_id: str) -> Optional[int]:
    """The millisecond time in a ULID's first 10 characters, or ``None`` if ``job_id`` is
    not a ULID (26 Crockford base32 characters, the first at most ``7``)."""
    if _ULID_RE.match(job_id) is None:
        return None
    return int(job_id[:10].upper().translate(_TO_BASE32), 32)


def pickup_delay_s(ctx: JobCtx, now_ms: int) -> Optional[float]:
    """Seconds from ``ctx``'s creation to ``now_ms``, or ``None`` when it is not measured.

    The reserve reply says nothing of when a job was queued, but a generated job id is a
    ULID whose time is the producer's clock at publish (omniq-fast and the official SDKs
    generate them). So the delay is counted for first attempts (``attempt == 1``) of jobs
    whose id holds a plausible ULID time (after mid-2017, at most a minute ahead of this
    clock); retries (their wait includes the backoff) and caller-chosen ids are left out.
    A job published with ``due_ms`` counts its requested delay too. The two clocks are
    the producer's and the worker's: a delay that comes out negative (skew) reads 0.
    """
    if ctx.attempt != 1:
        return None
    created = _ulid_ms(ctx.job_id)
    if created is None or created < _PLAUSIBLE_SINCE_MS or created > now_ms + _FUTURE_SLACK_MS:
        return None
    return max(0, now_ms - created) / 1000.0


def _use_multiprocess_values() -> None:
    # prometheus_client picks its value class when first imported. A worker forked from a
    # supervisor that imported it before setting PROMETHEUS_MULTIPROC_DIR inherits the
    # in-memory class, whose values no other process would ever see.
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class _QueueSeries:
    """The label children of one queue, made once (``labels()`` costs a lock and a dict
    lookup per call); every outcome starts at 0 so rates exist before the first one."""

    __slots__ = ("outcomes", "duration", "pickup_delay", "in_flight")

    def __init__(self, metrics: "WorkerMetrics", queue: str) -> None:
        self.outcomes = {o: metrics.jobs.labels(queue, o) for o in OUTCOMES}
        self.duration = metrics.duration.labels(queue)
        self.pickup_delay = metrics.pickup_delay.labels(queue)
        self.in_flight = metrics.in_flight.labels(queue)


class WorkerMetrics:
    """A :class:`~omniq_fast.observe.ConsumerObserver` keeping a worker's Prometheus
    metrics (see the module docstring) in ``registry`` (default: prometheus_client's
    global one). With ``PROMETHEUS_MULTIPROC_DIR`` set, values go to that directory for a
    supervisor to sum (see :func:`prepare_multiprocess`)."""

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        if os.environ.get(MULTIPROC_ENV):
            _use_multiprocess_values()
        reg = REGISTRY if registry is None else registry
        self.registry = reg
        self.jobs = Counter(
            "omniq_jobs", "Jobs handled by this worker, by outcome.",
            ["queue", "outcome"], registry=reg,
        )  # fmt: skip
        self.duration = Histogram(
            "omniq_job_duration_seconds", "How long job handlers ran.",
            ["queue"], buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.pickup_delay = Histogram(
            "omniq_job_pickup_delay_seconds",
            "From a job's creation (its ULID time) to its handler starting, first attempts.",
            ["queue"], buckets=PICKUP_DELAY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.in_flight = Gauge(
            "omniq_jobs_in_flight", "Jobs started by this worker whose outcome is not known yet.",
            ["queue"], multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self.up = Gauge(
            "omniq_worker_up", "1 while the worker runs (the number of live worker processes "
            "when summed).", multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self.up.set(1)
        self._series: dict[str, _QueueSeries] = {}
        self._lock = threading.Lock()
        self._server: Any = None

    def _of(self, queue: str) -> _QueueSeries:
        series = self._series.get(queue)
        if series is None:
            with self._lock:
                series = self._series.get(queue)
                if series is None:
                    series = self._series[queue] = _QueueSeries(self, queue)
        return series

    def job_started(self, ctx: JobCtx) -> None:
        """Count the job in flight and observe its pickup delay."""
        series = self._of(ctx.queue)
        series.in_flight.inc()
        delay = pickup_delay_s(ctx, time.time_ns() // 1_000_000)
        if delay is not None:
            series.pickup_delay.observe(delay)

    def job_finished(self, ctx: JobCtx, outcome: Outcome, duration_s: Optional[float]) -> None:
        """Count the outcome; a job that ran leaves the in-flight gauge and observes its
        duration (a released job never started, so it was never in flight)."""
        series = self._of(ctx.queue)
        series.outcomes[outcome].inc()
        if outcome != "released":
            series.in_flight.dec()
        if duration_s is not None:
            series.duration.observe(duration_s)

    def close(self) -> None:
        """The worker stopped: ``omniq_worker_up`` goes to 0 and the endpoint started by
        :func:`serve_worker_metrics` (if any) shuts down."""
        self.up.set(0)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_worker_metrics(
    port: int, *, host: str = "0.0.0.0", registry: Optional[CollectorRegistry] = None
) -> WorkerMetrics:
    """Serve a single-process worker's metrics on ``http://host:port/`` (any path) from a
    daemon thread and return the observer to pass to the consumer.

    With the default registry (prometheus_client's global one, which also holds its
    process and platform metrics) call it once per process; ``registry`` serves another.
    """
    metrics = WorkerMetrics(registry)
    metrics._server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    return metrics


def prepare_multiprocess() -> str:
    """For a supervisor, before it starts its worker processes: make a fresh directory for
    their metric files, set ``PROMETHEUS_MULTIPROC_DIR`` to it (the children inherit it) and
    return it. The directory is removed when this process exits."""
    path = tempfile.mkdtemp(prefix="omniq-fast-metrics-")
    os.environ[MULTIPROC_ENV] = path
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # a forked child that exits normally must not remove it
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


class MultiprocessNotPrepared(OmniqError, RuntimeError):
    """A multiprocess function was called without ``PROMETHEUS_MULTIPROC_DIR`` set."""


def _multiproc_dir() -> str:
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        raise MultiprocessNotPrepared(
            f"{MULTIPROC_ENV} is not set: call prepare_multiprocess() first"
        )
    return path


def serve_multiprocess_metrics(port: int, *, host: str = "0.0.0.0") -> None:
    """For the supervisor: serve the sum of every worker process's metrics (read from
    ``PROMETHEUS_MULTIPROC_DIR`` at each scrape) on ``http://host:port/``."""
    registry = CollectorRegistry()
    path = _multiproc_dir()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)


def mark_process_dead(pid: int) -> None:
    """For the supervisor, when worker ``pid`` exited: its gauges (in flight, up) leave
    the sum; its counters and histograms stay counted."""
    multiprocess.mark_process_dead(pid, _multiproc_dir())  # type: ignore[no-untyped-call]
