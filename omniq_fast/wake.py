"""The idle consumer's ear: a pub/sub listener on the queue's wake channel."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from .errors import TRANSIENT_ERRORS
from .keys import wake_channel

if TYPE_CHECKING:
    from .consumer import Consumer

__all__ = ["WakeListener"]

log = logging.getLogger("omniq_fast.consumer")


class WakeListener:
    """Wakes the dispatcher when a producer announces jobs on the queue's wake channel.

    Uses its own pub/sub connection; a message changes no queue state, it only cuts the
    poll wait short. Jobs from other SDKs, delayed jobs and retries are found by the poll.
    """

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._closed = threading.Event()
        self._pubsub = consumer.client.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._thread = threading.Thread(target=self._run, name="omniq-wake", daemon=True)
        try:
            self._pubsub.subscribe(wake_channel(consumer.queue))
        except TRANSIENT_ERRORS:
            log.warning("wake channel unavailable; polling only", exc_info=True)
            return
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.5)
            except TRANSIENT_ERRORS:
                if self._closed.wait(1.0):
                    return
                continue
            if message is not None:
                self._consumer._event.set()

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        try:
            self._pubsub.close()
        except TRANSIENT_ERRORS:
            pass
