"""What the benchmark scripts share: the server a run goes to, and the reference drain loop.

Each script runs as ``python benchmarks/<name>.py``, so this directory is on ``sys.path``.
"""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

from omniq_fast import Client
from omniq_fast.testing import EmbeddedServer

T = TypeVar("T")


def on_server(url: Optional[str], run: Callable[[str], T]) -> T:
    """``run(url)``; without a URL on an embedded server started for it (so that the
    server's CPU counters measure this run alone)."""
    if url:
        return run(url)
    with EmbeddedServer() as server:
        return run(server.url)


def drain(client: Client, queue: str, batch: int) -> None:
    """Empty ``queue`` by the fewest, largest script calls: ``reserve_many(batch)`` then
    ``ack_success_many`` of what it leased, until a reserve finds nothing."""
    while True:
        got = client.reserve_many(queue, batch)
        if not isinstance(got, list) or not got:
            return
        client.ack_success_many(queue, got)
