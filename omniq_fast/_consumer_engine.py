"""The one place a consumer reaches its client's I/O: the client's engine.

The blocking consumer needs a sync engine: ``core``, ``run_many(anchor, calls, extra)``,
``send_many(anchor, calls, after)`` (its replies read later: a :class:`Pending` or, where
they cannot wait on the wire, an :class:`Answered`; a write that failed is a
:class:`Failed`), ``run_plan(plan)``, and for its wake listener ``mode()`` (the cluster
router, or None on a single server) and ``redis``; the asyncio consumer the same calls on
an ``AsyncEngine``.

The client is typed by shape (:class:`HasEngine`), not imported: the client imports the
consumer, so importing the client here would close a circle.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from ._engine import Answered, Failed, now_ms
from ._transport import Pending

__all__ = ["HasEngine", "engine_of", "now_ms", "Answered", "Failed", "Pending"]

E = TypeVar("E", covariant=True)


class HasEngine(Protocol[E]):
    """What a client is to its consumers: the owner of an engine (``Engine`` for
    :class:`~omniq_fast.Client`, ``AsyncEngine`` for :class:`~omniq_fast.AsyncClient`)."""

    @property
    def _engine(self) -> E: ...


def engine_of(client: HasEngine[E]) -> E:
    """The engine the consumer of ``client`` runs its calls on."""
    return client._engine
