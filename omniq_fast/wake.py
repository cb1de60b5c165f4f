"""The idle consumer's ear: a pub/sub listener on the queue's wake channel."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Optional

from .errors import TRANSIENT_ERRORS
from .keys import wake_channel

if TYPE_CHECKING:
    from .consumer import Consumer

__all__ = ["WakeListener"]

log = logging.getLogger("omniq_fast.consumer")

#: How long one read waits for a message. Waiting sends nothing to the server; it only
#: bounds how long a consumer's stop waits for this thread (a longer wait made every
#: consumer's run() return half a second after its last job).
_READ_S = 0.1


class WakeListener:
    """Wakes the dispatcher when a producer announces jobs on the queue's wake channel.

    Uses its own pub/sub connection; a message changes no queue state, it only cuts the
    poll wait short. Jobs from other SDKs, delayed jobs and retries are found by the poll,
    so a listener that is down for a while only costs latency.

    On a cluster it subscribes at the queue's own master, with ``SSUBSCRIBE`` where the
    server has sharded pub/sub (producers then ``SPUBLISH``). When the slot moves, the
    server ends the subscription (``sunsubscribe``) or the node goes away; the listener
    then re-reads the slot map and subscribes at the new owner.
    """

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._channel = wake_channel(consumer.queue)
        self._router = consumer.client._mode()
        self._sharded = self._router is not None and self._router.sharded_pubsub
        self._closed = threading.Event()
        self._pubsub: Any = None
        self._thread = threading.Thread(target=self._run, name="omniq-wake", daemon=True)
        try:
            self._subscribe()
        except TRANSIENT_ERRORS:
            log.warning("wake channel unavailable; polling only", exc_info=True)
            return
        self._thread.start()

    def _subscribe(self) -> None:
        self._drop()
        if self._router is None:
            pubsub = self._consumer.client.redis.pubsub()
        else:
            # Plain PUBLISH on a cluster reaches every node, so the queue's master is as
            # good a place as any; SPUBLISH reaches only the slot's master (and replicas).
            route = self._router.route(self._channel)
            pubsub = route.owner_transport().redis.pubsub()  # type: ignore[no-untyped-call]
        if self._sharded:
            pubsub.ssubscribe(self._channel)
        else:
            pubsub.subscribe(self._channel)
        self._pubsub = pubsub
        log.debug("listening on %s at %s", self._channel, pubsub.connection)

    def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except TRANSIENT_ERRORS:
                pass

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                if self._pubsub is None:
                    self._subscribe()
                    # Jobs announced while we were not listening: look once now.
                    self._consumer.wake_up()
                message: Optional[dict[str, Any]] = self._pubsub.get_message(timeout=_READ_S)
            except TRANSIENT_ERRORS as exc:
                log.debug("wake channel %s failed (%s); subscribing again", self._channel, exc)
                self._drop()
                if self._closed.wait(0.5):
                    return
                if self._router is not None:
                    self._router.refresh()
                continue
            if message is None:
                continue
            kind = message["type"]
            if kind in ("message", "smessage"):
                self._consumer.wake_up()
            elif kind in ("sunsubscribe", "unsubscribe"):
                # The server dropped us: the slot moved. Subscribe where it lives now.
                log.debug("%s: the server ended the subscription", self._channel)
                self._drop()
                if self._router is not None:
                    self._router.refresh(force=True)

    def close(self) -> None:
        """Stop listening; returns within the read timeout (``_READ_S``)."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._drop()
