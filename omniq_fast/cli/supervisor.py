"""``omniq-fast worker --processes N``: N worker processes under one supervisor.

Each child is ``python -m omniq_fast worker ... --supervised`` with the resolved options
(the server URL goes by ``REDIS_URL`` in its environment, never on a command line that
``ps`` shows). A child that exits 0 is done (``--burst``, ``--max-jobs``); one that crashes
or is killed is started again after a backoff that doubles per consecutive crash (0.5 s up
to 30 s, reset once a child has run for a minute). The children run in their own session,
so a terminal's Ctrl+C reaches only the supervisor, which forwards each SIGTERM and SIGINT
once: the first drains every child, a second Ctrl+C makes them exit at once. The
supervisor exits when every child has, with 143 / 130 after a signal, else 0 if every
child finished cleanly.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Optional

from ..logs import configure_logging
from .options import SIGNAL_EXIT, CliError, WorkerConfig, connect

__all__ = ["supervise", "child_command"]

log = logging.getLogger("omniq_fast.supervisor")

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0
#: A child that ran this long before crashing starts again without delay growth.
_HEALTHY_RUN_S = 60.0


def child_command(config: WorkerConfig) -> list[str]:
    """The command line of one supervised child."""
    args = [sys.executable, "-m", "omniq_fast", "worker", config.target_spec, "--supervised",
            "--log-level", config.log_level, "--log-format", config.log_format]  # fmt: skip
    for queue in config.queues:
        args += ["-q", queue]
    for name, value in config.options.items():
        flag = "--" + name.replace("_", "-")
        if name == "burst":
            args += [flag] if value else []
        elif isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


@dataclass
class _Child:
    index: int
    proc: Optional[subprocess.Popen[bytes]] = None
    started: float = 0.0
    crashes: int = 0
    start_at: float = 0.0
    done: bool = False
    status: int = 0


class _Supervisor:
    def __init__(self, config: WorkerConfig, processes: int, metrics: Any) -> None:
        self.command = child_command(config)
        self.env = {**os.environ, "REDIS_URL": config.redis_url}
        self.children = [_Child(i) for i in range(processes)]
        self.metrics = metrics
        self.signal: Optional[int] = None

    def _forward(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signal is None:
            self.signal = signum
            log.info("%s received: stopping %d workers", signal.Signals(signum).name,
                     len(self.children))  # fmt: skip
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)

    def _start(self, child: _Child) -> None:
        child.proc = subprocess.Popen(self.command, env=self.env, start_new_session=True)
        child.started = time.monotonic()
        log.info("worker %d started: pid %d", child.index, child.proc.pid)

    def _reap(self, child: _Child, status: int) -> None:
        assert child.proc is not None
        pid, child.proc = child.proc.pid, None
        if self.metrics is not None:
            self.metrics.mark_process_dead(pid)
        if self.signal is not None or status == 0:
            child.done, child.status = True, status
            return
        ran = time.monotonic() - child.started
        child.crashes = 1 if ran >= _HEALTHY_RUN_S else child.crashes + 1
        delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (child.crashes - 1))
        how = (f"was killed by {signal.Signals(-status).name}" if status < 0
               else f"exited with status {status}")  # fmt: skip
        log.warning("worker %d (pid %d) %s after %.1f s; starting it again in %.1f s",
                    child.index, pid, how, ran, delay)  # fmt: skip
        child.start_at = time.monotonic() + delay

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        while not all(child.done for child in self.children):
            now = time.monotonic()
            for child in self.children:
                if child.done:
                    continue
                if child.proc is None:
                    if self.signal is not None:
                        child.done = True  # waiting for a restart: no need any more
                    elif now >= child.start_at:
                        self._start(child)
                    continue
                status = child.proc.poll()
                if status is not None:
                    self._reap(child, status)
            time.sleep(0.05)
        if self.signal is not None:
            return SIGNAL_EXIT[self.signal]
        return 0 if all(child.status == 0 for child in self.children) else 1


def supervise(config: WorkerConfig, processes: int) -> int:
    """Run ``processes`` workers of ``config`` until they are all done."""
    configure_logging(config.log_level, config.log_format)
    connect(config.redis_url).close()  # one clear error here, not N crashing children
    metrics = None
    if config.metrics_port is not None:
        try:
            metrics = importlib.import_module("omniq_fast.metrics")
        except ImportError as exc:
            raise CliError(f"--metrics-port: {exc}") from None
        metrics.prepare_multiprocess()  # sets PROMETHEUS_MULTIPROC_DIR for the children
        metrics.serve_multiprocess_metrics(config.metrics_port, host=config.metrics_host)
    return _Supervisor(config, processes, metrics).run()
