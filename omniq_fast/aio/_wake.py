"""The asyncio consumer's ear: key tracking (or the wake channel) on a pub/sub connection of
its own, what :class:`omniq_fast._wake.WakeListener` does on a thread for the blocking one.

With key tracking (``CLIENT TRACKING ON REDIRECT <own id> BCAST PREFIX ...``) the server
tells the connection of every write to the queue's tracked keys, whoever made it
(:mod:`omniq_fast._protocol.idle` says which keys and what each means): jobs from every SDK
wake the consumer, and its reserve poll becomes a rare safety net. Without tracking (a
server before Redis 6, a ``CLIENT`` command refused by an ACL or renamed) it subscribes to
the queue's wake channel, which omniq-fast producers notify, and the consumer polls as it
always did; that is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Optional

from ..keys import wake_channel
from .._outage import Backoff, Outage
from .._protocol.idle import IDLE_POLL_S, Change, change_of, tracking_command

__all__ = ["listen"]

log = logging.getLogger("omniq_fast.consumer")

#: How long one read waits (a cancelled read returns at once anyway).
_READ_S = 1.0
#: A PING this often finds a connection that died without a word (tracking sends nothing
#: while nothing changes); no reply within this long after it sets up again.
_PING_S = IDLE_POLL_S
#: How often, on a cluster, the listener checks that the node it listens at still owns the
#: queue's slot in the router's map (no command is sent).
_OWNER_CHECK_S = 0.5
#: How long a setup command (CLIENT ID, CLIENT TRACKING) may take.
_SETUP_S = 10.0
_INVALIDATE = "__redis__:invalidate"


class _Gone(Exception):
    """The listener's connection must be set up again (the slot moved, no PING reply, or
    redis-py reconnected it by itself: its tracking would be gone)."""


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def listen(
    engine: Any,
    queue: str,
    *,
    wake_up: Callable[[], None],
    armed: Callable[[bool], None],
    changed: Callable[[Change], None],
) -> None:
    """Listen for ``queue`` until cancelled: ``changed(change)`` on each invalidation,
    ``wake_up()`` on each wake message and after each (re)connect, ``armed(tracking)``
    whenever tracking starts (True) or is lost or unavailable (False). On a cluster it
    listens at the queue's master (``SSUBSCRIBE`` where the server has sharded pub/sub),
    and sets up again when the slot moves. Any failure: set up again after a backoff
    (polling finds the jobs meanwhile); this coroutine never fails."""
    channel = wake_channel(queue)
    backoff = Backoff(0.05, 2.0)
    outage = Outage(log, f"wake channel {channel}")
    said_untracked = [False]
    pubsub: Any = None
    tracking = False
    owner: Any = None
    confirmed = False
    ping_at = pong_by = check_at = 0.0
    try:
        while True:
            try:
                if pubsub is None:
                    pubsub, sharded = await engine.pubsub(channel)
                    tracking = await _arm(pubsub, queue, said_untracked)
                    if tracking:
                        await pubsub.subscribe(_INVALIDATE)
                    elif sharded:
                        await pubsub.ssubscribe(channel)
                    else:
                        await pubsub.subscribe(channel)
                    owner = _owner(engine, channel)
                    confirmed = False
                    backoff.reset()
                    outage.recovered()
                    now = time.monotonic()
                    ping_at, pong_by, check_at = now + _PING_S, 0.0, now + _OWNER_CHECK_S
                    armed(tracking)
                    wake_up()  # jobs queued while we were not listening: look once now
                now = time.monotonic()
                if pong_by and now > pong_by:
                    raise _Gone("no reply to PING")
                if now >= ping_at:
                    await pubsub.ping()
                    ping_at = pong_by = now + _PING_S
                if owner is not None and now >= check_at:
                    check_at = now + _OWNER_CHECK_S
                    if _owner(engine, channel) is not owner:
                        raise _Gone("the queue's slot moved to another node")
                message = await pubsub.get_message(timeout=_READ_S)
                if message is None:
                    continue
                pong_by = 0.0  # anything from the server: the connection lives
                kind = _text(message["type"])
                if kind == "message" and _text(message["channel"]) == _INVALIDATE:
                    changed(change_of(queue, message["data"]))
                elif kind in ("message", "smessage"):
                    wake_up()
                elif kind in ("subscribe", "ssubscribe"):
                    if confirmed:
                        # A second confirmation: redis-py reconnected and subscribed again
                        # on a new connection, which nobody told to track the keys.
                        raise _Gone("the connection was replaced")
                    confirmed = True
                elif kind in ("unsubscribe", "sunsubscribe"):
                    # The server dropped us (the slot moved): listen where it lives now.
                    if engine.router is not None:
                        await engine.router.refresh(force=True)
                    raise _Gone("the server ended the subscription")
            except Exception as exc:  # any failure: this task must never die
                gone = isinstance(exc, _Gone)
                if gone:
                    log.debug("%s: %s; listening again", channel, exc)
                else:
                    outage.failed(exc)
                await _drop(pubsub)
                pubsub = None
                if tracking:
                    tracking = False
                    armed(False)
                if not gone:
                    if engine.router is not None:
                        await engine.router.refresh()
                    await asyncio.sleep(backoff.delay())
    finally:
        await _drop(pubsub)


async def _arm(pubsub: Any, queue: str, said_untracked: list[bool]) -> bool:
    """Turn tracking on for ``pubsub``'s connection, redirected to itself (before it
    subscribes: a subscribed RESP2 connection takes no other command); False, said once
    in the log, if the server will not.

    The connection is switched to RESP2 first (``HELLO 2``): on a RESP3 connection (the
    default of recent redis-py) the server sends invalidations as ``invalidate`` pushes,
    which redis-py's pub/sub does not hand out, instead of messages of the channel."""
    import redis

    try:
        await _ask(pubsub, ("HELLO", "2"))
        client_id = await _ask(pubsub, ("CLIENT", "ID"))
        await _ask(pubsub, tracking_command(int(client_id), queue))
        return True
    except redis.ResponseError as exc:
        if not said_untracked[0]:
            said_untracked[0] = True
            log.warning(
                "key tracking is not available on the server of queue %s (%s): jobs from "
                "producers other than omniq-fast are found by polling", queue, exc,
            )  # fmt: skip
        return False


async def _ask(pubsub: Any, command: tuple[str, ...]) -> Any:
    """One command on the not yet subscribed connection, and its reply."""
    await pubsub.execute_command(*command)
    return await asyncio.wait_for(pubsub.parse_response(block=True), _SETUP_S)


def _owner(engine: Any, channel: str) -> Optional[Any]:
    """The connection to the master of ``channel``'s slot in the router's map (None when
    not a cluster)."""
    router = engine.router
    if router is None:
        return None
    return router.owner(router.route(channel).slot)


async def _drop(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            await pubsub.aclose()
        except Exception:  # closing a broken connection: nothing more to do
            pass
