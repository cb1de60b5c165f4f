"""Consuming several queues in one process: one :class:`Consumer` per queue, run together.

Each queue keeps its own dispatcher, workers, heartbeats and wake listener, so its round
trips go to the node that owns it (on a cluster, its own master) and a slow or paused
queue never holds up another. One stop — :meth:`MultiConsumer.stop`, SIGTERM or Ctrl+C —
stops them all, each draining as a single consumer does.
"""

from __future__ import annotations

import threading
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Sequence

from .consumer import Consumer, Handler
from ._stopping import LineLogger, StopOnSignals, signals_to_main_thread
from ._context import ConsumerStats
from .errors import InvalidArgument
from .keys import validate_queue_name
from ._options import check_flag

if TYPE_CHECKING:
    from .client import Client

__all__ = ["MultiConsumer"]


class MultiConsumer(StopOnSignals):
    """Consumes ``queues`` with one handler; :meth:`run` blocks until every queue's
    consumer has stopped.

    Options are :class:`Consumer`'s and apply to each queue: ``concurrency=4`` runs up to 4
    handlers per queue, and ``max_jobs`` stops each queue after that many jobs.
    """

    def __init__(
        self,
        client: "Client",
        queues: Sequence[str],
        handler: Handler,
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
        # The others are checked by each queue's Consumer; this one it does not get.
        check_flag("stop_on_ctrl_c", stop_on_ctrl_c)
        self.queue = ",".join(names)
        self.queues = names
        self._init_controls(verbose, logger, drain, stop_on_ctrl_c)
        # The consumers run on threads, where signals cannot be set; this object takes
        # them in the calling thread and stops every consumer.
        self.consumers = [
            Consumer(
                client, name, handler, verbose=verbose, logger=logger, drain=drain,
                stop_on_ctrl_c=False, **options,
            )  # fmt: skip
            for name in names
        ]
        self._errors: list[BaseException] = []

    def stop(self) -> None:
        """Ask every queue's consumer to finish what it started and exit."""
        for consumer in self.consumers:
            consumer.stop()

    @property
    def stats_by_queue(self) -> dict[str, ConsumerStats]:
        """Each queue's counts so far."""
        return {c.queue: c.stats for c in self.consumers}

    def run(self) -> ConsumerStats:
        """Consume until stopped; returns the counts summed over the queues."""
        restore = self._install_signals()
        threads = [
            # Daemons, so a second Ctrl+C can leave without waiting for them.
            threading.Thread(
                target=self._run_one, args=(c,), name=f"omniq-consume-{c.queue}", daemon=True
            )
            for c in self.consumers
        ]
        try:
            with signals_to_main_thread():  # SIGINT/SIGTERM reach this thread's handlers
                for thread in threads:
                    thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)  # short joins keep Ctrl+C deliverable
        except KeyboardInterrupt:
            pass  # a hard exit: the consumers were told to stop; their leases expire
        finally:
            restore()
        if self._errors:
            raise self._errors[0]
        total = ConsumerStats()
        for consumer in self.consumers:
            for field in fields(ConsumerStats):
                name = field.name
                setattr(total, name, getattr(total, name) + getattr(consumer.stats, name))
        return total

    def _run_one(self, consumer: Consumer) -> None:
        try:
            consumer.run()
        except BaseException as exc:  # one queue's failure stops them all
            self._errors.append(exc)
            self.stop()
