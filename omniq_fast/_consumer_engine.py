"""The one place the blocking consumer reaches its client's I/O: the client's engine.

The consumer needs a sync engine: ``core``, ``run_many(anchor, calls, extra)``,
``run_plan(plan)``, and for its wake listener ``mode()`` (the cluster router, or None on a
single server) and ``redis``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._engine import Engine, now_ms

if TYPE_CHECKING:
    from .client import Client

__all__ = ["engine_of", "now_ms"]


def engine_of(client: "Client") -> Engine:
    """The engine the consumer of ``client`` runs its calls on."""
    return client._engine
