"""The idle consumer's ear: a pub/sub listener on the queue's wake channel."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import TRANSIENT_ERRORS
from .keys import wake_channel
from ._outage import Backoff, Outage

if TYPE_CHECKING:
    from ._cluster import ClusterRouter

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

    def __init__(
        self,
        queue: str,
        wake_up: Callable[[], None],
        find_router: Callable[[], Optional[ClusterRouter]],
        standalone: Callable[[], Any],
    ) -> None:
        """``wake_up()`` is called on each message (and after each (re)subscribe);
        ``find_router()`` is the cluster router or None (it may ask the server);
        ``standalone()`` is the one server's redis-py client."""
        self._wake_up = wake_up
        self._find_router = find_router
        self._standalone = standalone
        self._channel = wake_channel(queue)
        self._router: Optional[ClusterRouter] = None
        self._sharded = False
        self._closed = threading.Event()
        self._pubsub: Any = None
        self._known = False  # whether the client is a cluster is known (needs the server)
        self._backoff = Backoff(0.05, 2.0)
        self._outage = Outage(log, f"wake channel {self._channel}")
        # Everything that needs the server happens on the thread, retried with backoff:
        # a consumer started while the server is down waits for it like any outage.
        self._thread = threading.Thread(target=self._run, name="omniq-wake", daemon=True)
        self._thread.start()

    def _subscribe(self) -> None:
        self._drop()
        if self._router is None:
            pubsub = self._standalone().pubsub()
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
        refresh = False
        while not self._closed.is_set():
            try:
                if not self._known:
                    self._router = self._find_router()
                    self._sharded = self._router is not None and self._router.sharded_pubsub
                    self._known = True
                if refresh and self._router is not None:
                    self._router.refresh()
                refresh = False
                if self._pubsub is None:
                    self._subscribe()
                    self._backoff.reset()
                    self._outage.recovered()
                    # Jobs announced while we were not listening: look once now.
                    self._wake_up()
                message: Optional[dict[str, Any]] = self._pubsub.get_message(timeout=_READ_S)
            except Exception as exc:  # any failure: this thread must never die
                # Polling finds the jobs meanwhile; subscribe again after a backoff.
                self._outage.failed(exc)
                self._drop()
                refresh = True
                if self._closed.wait(self._backoff.delay()):
                    return
                continue
            if message is None:
                continue
            kind = message["type"]
            if kind in ("message", "smessage"):
                self._wake_up()
            elif kind in ("sunsubscribe", "unsubscribe"):
                # The server dropped us: the slot moved. Subscribe where it lives now.
                log.debug("%s: the server ended the subscription", self._channel)
                self._drop()
                if self._router is not None:
                    try:
                        self._router.refresh(force=True)
                    except Exception as exc:
                        self._outage.failed(exc)
                        refresh = True

    def close(self) -> None:
        """Stop listening; returns within the read timeout (``_READ_S``)."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._drop()
