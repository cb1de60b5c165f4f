"""Consuming several queues on one event loop: one :class:`AsyncConsumer` per queue.

Each queue keeps its own dispatcher task, workers, heartbeats and wake listener, so a slow
or paused queue never holds up another. One stop — :meth:`AsyncMultiConsumer.stop`,
SIGTERM, Ctrl+C or cancelling the task awaiting :meth:`~AsyncMultiConsumer.run` — stops
them all, each draining as a single consumer does.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Sequence

from .._context import ConsumerStats
from ..errors import InvalidArgument
from ..keys import validate_queue_name
from .._options import check_flag
from .._stopping import LineLogger, StopOnSignals
from ._tasks import uncancel_current
from .consumer import AsyncConsumer, AsyncHandler

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["AsyncMultiConsumer"]


class AsyncMultiConsumer(StopOnSignals):
    """Consumes ``queues`` with one ``async def`` handler; ``await`` :meth:`run` until every
    queue's consumer has stopped. Options are :class:`AsyncConsumer`'s and apply to each
    queue, as with :class:`~omniq_fast.MultiConsumer`."""

    def __init__(
        self,
        client: "AsyncClient",
        queues: Sequence[str],
        handler: AsyncHandler,
        *,
        verbose: bool = False,
        logger: LineLogger = print,
        drain: bool = True,
        stop_on_ctrl_c: bool = True,
        **options: Any,
    ) -> None:
        if isinstance(queues, str):
            raise InvalidArgument("queues must be a list of queue names, not one str")
        names = [validate_queue_name(q) for q in queues]
        if not names:
            raise InvalidArgument("queues must name at least one queue")
        if len(set(names)) != len(names):
            raise InvalidArgument("queues must not repeat a queue")
        check_flag("stop_on_ctrl_c", stop_on_ctrl_c)
        self.queue = ",".join(names)
        self.queues = names
        self._init_controls(verbose, logger, drain, stop_on_ctrl_c)
        # One consumer takes the signals (on the loop) and stops every consumer.
        self.consumers = [
            AsyncConsumer(
                client, name, handler, verbose=verbose, logger=logger, drain=drain,
                stop_on_ctrl_c=False, **options,
            )  # fmt: skip
            for name in names
        ]

    def stop(self) -> None:
        """Ask every queue's consumer to finish what it started and exit."""
        for consumer in self.consumers:
            consumer.stop()

    @property
    def stats_by_queue(self) -> dict[str, ConsumerStats]:
        """Each queue's counts so far."""
        return {c.queue: c.stats for c in self.consumers}

    async def run(self) -> ConsumerStats:
        """Consume until stopped; returns the counts summed over the queues."""
        restore = self._install_loop_signals(asyncio.get_running_loop())
        tasks = [asyncio.ensure_future(_contained(c.run())) for c in self.consumers]
        errors: list[BaseException] = []
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.cancelled():
                        continue
                    error = task.exception()
                    if error is None and isinstance(task.result(), BaseException):
                        error = task.result()  # a handler's SystemExit and such
                    if error is not None:
                        errors.append(error)
                        self.stop()  # one queue's failure stops them all
        except asyncio.CancelledError:
            # Each consumer drains (a graceful stop), unless this is a hard exit.
            for consumer, task in zip(self.consumers, tasks):
                if self._hard_exit:
                    consumer._exit_now()
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not self._hard_exit:
                raise
            # Our own hard Ctrl+C: the counts so far, as MultiConsumer.run returns them.
            uncancel_current()
        finally:
            restore()
        if errors:
            raise errors[0]
        total = ConsumerStats()
        for consumer in self.consumers:
            for field in fields(ConsumerStats):
                name = field.name
                setattr(total, name, getattr(total, name) + getattr(consumer.stats, name))
        return total


async def _contained(run: Any) -> Any:
    """A consumer's ``run()``, with a SystemExit, KeyboardInterrupt or other BaseException
    its handler raised handed back as the result: raised from a task, asyncio lets those
    escape the event loop at once, and the other queues' consumers would never be
    stopped (``run`` re-raises it once they all have)."""
    try:
        return await run
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as exc:
        return exc
