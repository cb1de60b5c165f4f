"""The asyncio shell: the same roles as the blocking API, as coroutines.

:class:`AsyncClient` runs the same operations as :class:`~omniq_fast.Client` over one
automatically pipelined connection; :class:`AsyncQueueMonitor` reads what
:class:`~omniq_fast.QueueMonitor` reads; :class:`AsyncConsumer` runs ``async def``
handlers as tasks on the caller's loop, on the same decisions as
:class:`~omniq_fast.Consumer`.
"""

from .client import AsyncClient
from .consumer import AsyncConsumer, AsyncJobCtx
from .monitor import AsyncQueueMonitor
from .multiqueue import AsyncMultiConsumer

__all__ = ["AsyncClient", "AsyncConsumer", "AsyncJobCtx", "AsyncMultiConsumer", "AsyncQueueMonitor"]
