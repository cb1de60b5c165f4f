"""The one place the blocking consumer reaches its client's I/O.

The consumer needs a sync engine (``core``, ``run_many(anchor, calls, extra)``,
``run_plan(plan)``) and, for its wake listener, the cluster router or the one server's
redis client. :func:`engine_of` returns it; until ``Client`` composes its own engine
(``client._engine``), :class:`ClientEngine` offers those calls over the client's plumbing.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional, Sequence, TypeVar

from ._base import now_ms
from ._protocol.calls import Plan
from .scripts import Script

if TYPE_CHECKING:
    from .client import Client
    from .cluster import ClusterRouter

__all__ = ["ClientEngine", "engine_of", "now_ms"]

T = TypeVar("T")


class ClientEngine:
    """The engine calls a consumer makes, over ``client``'s transports."""

    def __init__(self, client: "Client") -> None:
        self._client = client
        self.core: ModuleType = client._core

    def run_many(
        self, anchor: str, calls: Sequence[tuple[Script, bytes]], extra: Sequence[bytes] = ()
    ) -> list[Any]:
        """One round trip to ``anchor``'s server; replies in order, errors as values."""
        return self._client._at(anchor).run_many(calls, extra)

    def run_plan(self, plan: Plan[T]) -> T:
        """Each call of ``plan`` in turn, then its joined result."""
        results = [
            call.result(self._client._at(call.anchor).run_encoded(call.script, call.data))
            for call in plan.calls
            if call.script is not None
        ]
        return plan.join(results)

    def find_router(self) -> Optional["ClusterRouter"]:
        """The cluster router, or None on a single server (may ask the server)."""
        return self._client._mode()

    def standalone(self) -> Any:
        """The one server's redis-py client."""
        return self._client.redis


def engine_of(client: "Client") -> ClientEngine:
    """The engine the consumer of ``client`` runs its calls on."""
    return ClientEngine(client)
