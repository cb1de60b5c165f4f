"""The dashboard's background sampling: queue names and per-minute history.

The task starts on the first request rather than in a lifespan handler, because an app
mounted inside FastAPI or Starlette never receives its own lifespan events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from ._data import DashboardData
from ._history import History
from ..aio._tasks import cancel_and_wait

__all__ = ["Sampler"]

log = logging.getLogger("omniq_fast.dashboard")

#: Queue names are found with a SCAN of the whole keyspace: at most this often.
QUEUE_NAMES_MAX_AGE_S = 10.0


class Sampler:
    """Samples every queue each ``interval_s`` into a :class:`History`."""

    def __init__(self, data: DashboardData, interval_s: float) -> None:
        self.data = data
        self.interval_s = interval_s
        self.history = History()
        self._names: list[str] = []
        self._names_at = -1e18
        self._names_max_age = min(QUEUE_NAMES_MAX_AGE_S, max(0.5, 2 * interval_s))
        self._task: Optional[asyncio.Task[None]] = None

    async def queue_names(self, *, fresh: bool = False) -> list[str]:
        """The queues found by the last scan, scanning again when it is old (or ``fresh``)."""
        if fresh or time.monotonic() - self._names_at > self._names_max_age:
            self._names = await self.data.queue_names()
            self._names_at = time.monotonic()
        return self._names

    def ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    async def sample_once(self) -> None:
        names = await self.queue_names()
        samples = await self.data.activity(names, self.history.marks())
        now = time.time()
        for sample in samples:
            self.history.record(now, sample)

    async def _run(self) -> None:
        while True:
            try:
                await self.sample_once()
            except Exception:  # a lost server must not end the history for good
                log.warning("dashboard sampling failed", exc_info=True)
            await asyncio.sleep(self.interval_s)
