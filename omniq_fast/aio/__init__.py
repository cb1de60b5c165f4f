"""The asyncio shell: the same roles as the blocking API, as coroutines.

:class:`AsyncClient` runs the same operations as :class:`~omniq_fast.Client` over one
automatically pipelined connection; :class:`AsyncQueueMonitor` reads what
:class:`~omniq_fast.QueueMonitor` reads.
"""

from .client import AsyncClient
from .monitor import AsyncQueueMonitor

__all__ = ["AsyncClient", "AsyncQueueMonitor"]
