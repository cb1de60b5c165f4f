"""``omniq-fast worker MODULE:FUNCTION``: consume queues with a handler from a module.

The target is a handler (``def`` or ``async def``, taking a :class:`~omniq_fast.JobCtx`) or
a *settings object*: any module, class or instance with a ``handler`` attribute and,
optionally, ``on_startup`` / ``on_shutdown`` hooks (sync or async, called with the
worker's :class:`~omniq_fast.Client`), ``queues`` (a name or a list), ``redis_url`` and
defaults for any consume option (``concurrency = 8``...). Command-line options win over the
settings, which win over the consumer's defaults.

Signals: SIGTERM and the first Ctrl+C drain (running jobs finish and are acked, prefetched
ones are given back) and exit 143 / 130; a second Ctrl+C, or the first with ``--no-drain``,
exits at once. ``--burst`` and ``--max-jobs`` exit 0 once done.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Optional

import click

from ..client import Client
from ..consumer import MAX_PREFETCH, Consumer
from .._context import ConsumerStats
from ..logs import configure_logging
from ..multiqueue import MultiConsumer
from .options import (
    SIGNAL_EXIT, CliError, WorkerConfig, check_queue, connect, redis_url_option, shown_url,
)

__all__ = ["worker", "WorkerConfig", "load_target", "CONSUME_OPTIONS"]

log = logging.getLogger("omniq_fast.worker")

#: Consume options a settings object may default and the command sets (same names).
CONSUME_OPTIONS = (
    "concurrency", "prefetch", "max_jobs", "burst", "poll_interval_s", "promote_interval_s",
    "promote_batch", "reap_interval_s", "reap_batch", "heartbeat_interval_s", "ack_delay_s",
    "drain", "wake", "tracebacks",
)  # fmt: skip


@dataclass
class Target:
    """What ``MODULE:FUNCTION`` named: the handler and the settings around it."""

    handler: Callable[..., Any]
    settings: Any = None

    def setting(self, name: str) -> Any:
        return getattr(self.settings, name, None) if self.settings is not None else None


def load_target(spec: str) -> Target:
    """Import ``MODULE:ATTR`` (``ATTR`` may be dotted); :class:`CliError` if it fails."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"expected MODULE:FUNCTION (like myapp.jobs:handle), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules of the project dir
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CliError(f"cannot import {module_name!r}: no module named {exc.name!r}") from None
        raise CliError(f"importing {module_name!r} failed: ModuleNotFoundError: {exc}") from None
    except Exception as exc:  # the module itself raised: say what, in one line
        raise CliError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc} "
            f"(python -c 'import {module_name}' shows the traceback)"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"{spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if hasattr(obj, "handler"):
        if not callable(obj.handler):
            raise CliError(f"{spec!r}: its handler is not callable")
        return Target(obj.handler, obj)
    if not callable(obj):
        raise CliError(f"{spec!r} is neither a handler nor a settings object with a handler")
    return Target(obj)


class _HookLoop:
    """One event loop thread shared by async hooks and an async handler, so that what a
    hook opens (a connection pool) is used on the loop it belongs to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="omniq-hooks",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def run(self, awaitable: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(awaitable, self.loop).result()

    def wrap(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        loop = self.loop

        async def on_hook_loop(ctx: Any) -> Any:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(handler(ctx), loop))

        return on_hook_loop

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)
    )


def _call_hook(hook: Any, client: Client, loop: Optional[_HookLoop], name: str) -> None:
    try:
        result = hook(client)
        if inspect.isawaitable(result):
            assert loop is not None
            loop.run(result)
    except Exception as exc:
        raise CliError(f"{name} failed: {type(exc).__name__}: {exc}") from exc


def _metrics_observer(config: WorkerConfig) -> Any:
    """The metrics observer to pass to the consumer, or ``None`` without metrics."""
    if config.metrics_port is None and not config.supervised:
        return None
    if config.supervised and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None  # the supervisor serves no metrics
    try:
        metrics = importlib.import_module("omniq_fast.metrics")
    except ImportError as exc:
        raise CliError(f"--metrics-port: {exc}") from None
    if config.supervised:
        return metrics.WorkerMetrics()
    return metrics.serve_worker_metrics(config.metrics_port, host=config.metrics_host)


class _Stopper:
    """The worker's signal handling: the first SIGTERM/SIGINT drains, a second SIGINT
    (or the first without drain) exits at once. Remembers the first signal for the exit
    status."""

    def __init__(self, stop: Callable[[], None], drain: bool) -> None:
        self._stop = stop
        self._drain = drain
        self.signal: Optional[int] = None
        self._sigints = 0

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signal is None:
            self.signal = signum
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints > 1 or not self._drain:
                log.warning("Ctrl+C: exiting now; unfinished jobs are retried when their "
                            "leases expire")  # fmt: skip
                logging.shutdown()
                os._exit(SIGNAL_EXIT[signal.SIGINT])
        name = signal.Signals(signum).name
        log.info("%s received: finishing running jobs, then exiting (Ctrl+C again to exit "
                 "at once)", name)  # fmt: skip
        self._stop()


def run_worker(config: WorkerConfig, target: Target) -> int:
    """Run one worker process of ``target`` until it stops; returns its exit status."""
    configure_logging(config.log_level, config.log_format)
    client = connect(config.redis_url)
    hooks = [target.setting("on_startup"), target.setting("on_shutdown")]
    loop = _HookLoop() if any(h is not None and _is_async(h) for h in hooks) else None
    handler = target.handler
    if loop is not None and _is_async(handler):
        handler = loop.wrap(handler)
    observer = _metrics_observer(config)
    options = dict(config.options)
    if observer is not None:
        options["observer"] = observer
    verbose = logging.getLogger("omniq_fast.consumer").isEnabledFor(logging.INFO)
    common = dict(verbose=verbose, logger=logging.getLogger("omniq_fast.consumer"), **options)
    runner: Any
    try:
        if len(config.queues) == 1:
            runner = Consumer(client, config.queues[0], handler, **common)
        else:
            runner = MultiConsumer(client, config.queues, handler, **common)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if hooks[0] is not None:
        _call_hook(hooks[0], client, loop, "on_startup")
    stopper = _Stopper(runner.stop, options.get("drain", True))
    stopper.install()
    outcome: dict[str, Any] = {}

    def consume() -> None:
        try:
            outcome["stats"] = runner.run()
        except BaseException as exc:
            outcome["error"] = exc

    # The consumer runs on a thread (where it sets no signal handlers), so this thread
    # owns the signals and knows which one stopped the worker.
    thread = threading.Thread(target=consume, name="omniq-consumer", daemon=True)
    log.info("worker started: queues=%s server=%s handler=%s pid=%d", ",".join(config.queues),
             shown_url(config.redis_url), config.target_spec, os.getpid())  # fmt: skip
    parent = os.getppid()
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
        if config.supervised and os.getppid() != parent and stopper.signal is None:
            log.warning("the supervisor went away: stopping")
            stopper.signal = signal.SIGTERM
            runner.stop()
    try:
        if hooks[1] is not None:
            _call_hook(hooks[1], client, loop, "on_shutdown")
    finally:
        if loop is not None:
            loop.close()
        client.close()
    if "error" in outcome:
        raise outcome["error"]
    stats: ConsumerStats = outcome["stats"]
    log.info("worker stopped: handled=%d succeeded=%d failed=%d lease_lost=%d",
             stats.handled, stats.succeeded, stats.failed, stats.lease_lost)  # fmt: skip
    return 0 if stopper.signal is None else SIGNAL_EXIT[stopper.signal]


def _number(kind: type, minimum: float) -> Any:
    if kind is int:
        return click.IntRange(min=int(minimum))
    return click.FloatRange(min=minimum)


@click.command(context_settings={"show_default": True})
@click.argument("target", metavar="MODULE:FUNCTION")
@click.option("-q", "--queue", "queues", multiple=True, metavar="QUEUE",
              help="Queue to consume; repeat for several (one consumer each, one process).")
@redis_url_option
@click.option("--concurrency", type=click.IntRange(min=1), help="Handlers at once, per queue [1].")
@click.option("--prefetch", type=click.IntRange(0, MAX_PREFETCH),
              help="Most jobs reserved ahead [adaptive, up to 1000].")
@click.option("--processes", type=click.IntRange(min=1), default=1,
              help="Worker processes under one supervisor (restarts crashed ones).")
@click.option("--burst", is_flag=True, default=None,
              help="Exit once the queues are empty (or paused) and nothing runs.")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after this many jobs per queue.")
@click.option("--log-level", default="INFO",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="INFO logs a line per job; WARNING keeps only problems.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              help="json: one object per line with the job fields (queue, job_id, ...).")
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Serve Prometheus metrics on this port (extra 'metrics').")
@click.option("--metrics-host", default="0.0.0.0", help="Address the metrics endpoint binds.")
@click.option("--poll-interval-s", type=_number(float, 0.0), help="Idle wait between reserves [0.05].")
@click.option("--promote-interval-s", type=_number(float, 0.0), help="Promote delayed jobs every [1.0].")
@click.option("--promote-batch", type=_number(int, 1), help="Delayed jobs promoted per call [1000].")
@click.option("--reap-interval-s", type=_number(float, 0.0), help="Reap expired leases every [1.0].")
@click.option("--reap-batch", type=_number(int, 1), help="Expired leases reaped per call [1000].")
@click.option("--heartbeat-interval-s", type=_number(float, 0.001),
              help="Heartbeat every [half the job's timeout, 1-10 s].")
@click.option("--ack-delay-s", type=_number(float, 0.0), help="Longest an ack waits for company [0.002].")
@click.option("--drain/--no-drain", default=None,
              help="Ctrl+C finishes running jobs first [drain]; --no-drain exits at once.")
@click.option("--wake/--no-wake", default=None, help="Listen for producers' wake-ups [wake].")
@click.option("--tracebacks/--no-tracebacks", default=None,
              help="Store the handler's traceback after the 'Type: message' line [tracebacks]; "
                   "--no-tracebacks keeps the official SDK's short form.")
@click.option("--supervised", is_flag=True, hidden=True)
def worker(target: str, queues: tuple[str, ...], redis_url: str, processes: int,
           log_level: str, log_format: str, metrics_port: Optional[int], metrics_host: str,
           supervised: bool, **consume_options: Any) -> int:  # fmt: skip
    """Consume QUEUEs with the handler MODULE:FUNCTION (or a settings object).

    \b
    omniq-fast worker myapp.jobs:send_email -q emails
    omniq-fast worker myapp.jobs:settings --processes 4 --log-format json
    """
    loaded = load_target(target)
    config = resolve(target, loaded, queues, redis_url, consume_options, supervised)
    config.log_level, config.log_format = log_level, log_format
    config.metrics_port, config.metrics_host = metrics_port, metrics_host
    if processes > 1:
        from .supervisor import supervise

        return supervise(config, processes)
    return run_worker(config, loaded)


def resolve(spec: str, target: Target, queues: tuple[str, ...], redis_url: str,
            given: dict[str, Any], supervised: bool) -> WorkerConfig:  # fmt: skip
    """Merge the command line with the settings object's defaults."""
    names: Any = list(queues) or target.setting("queues")
    if isinstance(names, str):
        names = [names]
    if not names:
        raise CliError("no queue: pass -q QUEUE (or set queues in the settings object)")
    names = [check_queue(name) for name in names]
    if len(set(names)) != len(names):
        raise CliError("a queue is named twice")
    options: dict[str, Any] = {}
    for name in CONSUME_OPTIONS:
        value = given.get(name)
        if value is None:
            value = target.setting(name)
        if value is not None:
            options[name] = value
    source = click.get_current_context().get_parameter_source("redis_url")
    url = redis_url
    if source is click.core.ParameterSource.DEFAULT and target.setting("redis_url"):
        url = target.setting("redis_url")
    return WorkerConfig(spec, names, url, options, supervised=supervised)
