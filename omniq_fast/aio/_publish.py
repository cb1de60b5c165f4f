"""``AsyncClient.publish_many``: the stream of ``enqueue_batch`` calls, on asyncio.

What each reply means, which batches go again after a failure and the error the caller
sees are :class:`~omniq_fast._protocol.streams.PublishRun`'s decisions, shared with the
blocking client (:func:`omniq_fast._pipelines.publish_many`). Here the batches only travel:
the queues' batches interleaved, a couple in flight on the connection while the server
runs the previous one, every in-flight reply read (and booked) before the run stops.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Optional

from .._protocol.streams import Feed, PublishRun, Sent, retry_delay
from ..errors import ConnectionLost, ReplyError
from .._protocol.noscript import MAX_NOSCRIPT_RETRIES
from .._protocol.noscript import is_noscript as _is_noscript
from ._connection import NotSent
from ._engine import AsyncEngine

__all__ = ["publish_many"]

#: Batches in flight at once (as the blocking stream): the next one is on the wire while
#: the server runs the current one.
WINDOW = 2


async def publish_many(engine: AsyncEngine, run: PublishRun) -> dict[str, list[str]]:
    """Stream a ``publish_many_queues`` call's batches; send again what ``run`` says may
    go again after a failure (sleeping between tries); its result or its error."""
    feeds = {q: Feed(run.batches(q)) for q in run.jobs_by_queue}
    await engine.ready()
    while True:
        failed = await _stream(engine, run, feeds)
        if failed is None:
            return run.result()
        cause, lost = failed
        again = run.again(cause, lost)
        if again is None:
            raise run.failure(cause, lost) from cause
        await asyncio.sleep(retry_delay(run.tries))
        for sent in reversed(again):
            feeds[sent.queue].retry.appendleft(sent)


async def _stream(
    engine: AsyncEngine, run: PublishRun, feeds: dict[str, Feed[Sent]]
) -> Optional[tuple[BaseException, list[Sent]]]:
    """Send every feed's batches once through; None when all were answered and booked,
    else the first failure and the batches whose outcome it made unknown."""
    conn = engine.connection
    what = run.script.name
    active = deque(f for f in feeds.values() if not f.finished)
    in_flight: deque[tuple[Sent, asyncio.Future[list[Any]]]] = deque()
    failure: Optional[BaseException] = None

    def put_back(sents: list[Sent]) -> None:
        # Never written (the socket failed first): they go again as they are, in order.
        for sent in reversed(sents):
            feeds[sent.queue].retry.appendleft(sent)

    while True:
        if failure is None and len(in_flight) < WINDOW and active:
            try:
                link = await conn.link()
            except Exception as exc:  # connecting failed: nothing more was sent
                failure = exc
                continue
            while len(in_flight) < WINDOW and active:
                feed = active.popleft()
                try:
                    sent = feed.next()
                except Exception as exc:
                    # An item that failed to encode: what is in flight still gets its
                    # replies, so the caller hears exactly what was written.
                    failure = exc
                    break
                if sent is None:
                    continue
                active.append(feed)
                in_flight.append((sent, link.submit(sent.data, 2, what)))
        if not in_flight:
            break
        sent, future = in_flight[0]
        try:
            replies = await future
        except NotSent:
            put_back([s for s, _ in in_flight])
            in_flight.clear()
            continue
        except ConnectionLost as exc:
            lost = [sent]
            unsent: list[Sent] = []
            for later, f in list(in_flight)[1:]:
                try:
                    await f
                except NotSent:
                    unsent.append(later)
                except BaseException:
                    lost.append(later)
            put_back(unsent)
            return exc, lost
        if _is_noscript(replies[0]):
            try:
                answered = await _rerun_noscript(engine, run, in_flight, replies)
            except (ConnectionLost, NotSent) as exc:
                # None of them was booked: all their outcomes are unknown.
                cause = exc if isinstance(exc, ConnectionLost) else ConnectionLost(
                    "connection lost while re-sending after NOSCRIPT"
                )
                return cause, [s for s, _ in in_flight]
        else:
            answered = [(sent, replies)]
        for sent, replies in answered:
            in_flight.popleft()
            refused = run.on_reply(sent, replies)
            if refused is not None and failure is None:
                failure = refused  # no more batches go; those in flight are still booked
    if failure is not None:
        return failure, []
    return None


async def _rerun_noscript(
    engine: AsyncEngine,
    run: PublishRun,
    in_flight: deque[tuple[Sent, asyncio.Future[list[Any]]]],
    head: list[Any],
) -> list[tuple[Sent, list[Any]]]:
    """The script was flushed: the head batch answered NOSCRIPT, and (most likely) so did
    the batches after it. Wait for those replies, then batch by batch, in order, load the
    script and send again each batch that did not run (bounded by
    :data:`MAX_NOSCRIPT_RETRIES`; a NOSCRIPT reply means it changed nothing). A batch whose
    load was refused keeps its NOSCRIPT reply."""
    answered = [(in_flight[0][0], head)]
    for sent, future in list(in_flight)[1:]:
        answered.append((sent, await future))
    load = engine.load_command(run.script)
    out = []
    for sent, replies in answered:
        tries = 0
        while _is_noscript(replies[0]) and tries < MAX_NOSCRIPT_RETRIES:
            tries += 1
            loaded, *replies = await engine.connection.request(load + sent.data, 3, run.script.name)
            if isinstance(loaded, ReplyError):
                break
        out.append((sent, replies))
    return out
