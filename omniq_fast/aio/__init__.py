"""The asyncio shell: :class:`AsyncClient`, the same operations as :class:`~omniq_fast.Client`
as coroutines, over one automatically pipelined connection."""

from .client import AsyncClient

__all__ = ["AsyncClient"]
