"""The one place the blocking consumer reaches its client's I/O: the client's engine.

The consumer needs a sync engine: ``core``, ``run_many(anchor, calls, extra)``,
``run_plan(plan)``, and for its wake listener ``mode()`` (the cluster router, or None on a
single server) and ``redis``.

The client is typed by shape (:class:`HasEngine`), not imported: the client imports the
consumer, so importing the client here would close a circle.
"""

from __future__ import annotations

from typing import Protocol

from ._engine import Engine, now_ms

__all__ = ["HasEngine", "engine_of", "now_ms"]


class HasEngine(Protocol):
    """What :class:`~omniq_fast.Client` is to its consumers: the owner of an engine."""

    @property
    def _engine(self) -> Engine: ...


def engine_of(client: HasEngine) -> Engine:
    """The engine the consumer of ``client`` runs its calls on."""
    return client._engine
