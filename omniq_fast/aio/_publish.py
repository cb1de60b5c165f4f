"""``AsyncClient.publish_many``: the stream of ``enqueue_batch`` calls, on asyncio.

What each reply means, which batches go again after a failure and the error the caller
sees are :class:`~omniq_fast._protocol.streams.PublishRun`'s decisions, shared with the
blocking client (:func:`omniq_fast._pipelines.publish_many`). Here the batches only travel:
the queues' batches interleaved, a couple in flight on the connection while the server
runs the previous one, every in-flight reply read (and booked) before the run stops.

On a cluster each master gets the stream of the queues it owns, on its own connection, the
nodes at the same time. A batch answered with a redirection (``MOVED``, ``ASK``,
``TRYAGAIN``, ``CLUSTERDOWN``: it did not run) stops its queue's feed on that node; once
every node's stream has drained, the redirected batches (in order) and the rest of their
queues are planned again on the refreshed slot map, as the routing core decides
(:func:`omniq_fast._protocol.routing.settle`), within ``cluster_retry_s``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Optional

from .._protocol import routing
from .._protocol.streams import Feed, PublishRun, Sent, retry_delay
from ..errors import ClusterUnavailable, ConnectionLost, ReplyError, ServerUnreachable
from .._protocol.noscript import MAX_NOSCRIPT_RETRIES
from .._protocol.noscript import is_noscript as _is_noscript
from ._cluster import AsyncClusterRouter, _Patience
from ._connection import Connection, NotSent
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
    router = engine.router
    while True:
        if router is None:
            failed = await _stream(engine.connection, engine, run, feeds, _Round())
        else:
            failed = await _on_cluster(router, engine, run, feeds)
        if failed is None:
            return run.result()
        cause, lost = failed
        again = run.again(cause, lost)
        if again is None:
            raise run.failure(cause, lost) from cause
        await asyncio.sleep(retry_delay(run.tries))
        for sent in reversed(again):
            feeds[sent.queue].retry.appendleft(sent)


class _Round:
    """What the node streams of one round share: whether one failed (then no node sends
    more), whether any batch was booked, and the redirections seen (cluster mode: queue ->
    ``(kind, address)``; None on a single server, where no reply is a redirection)."""

    __slots__ = ("failed", "progress", "redirects")

    def __init__(self, redirects: Optional[dict[str, tuple[str, str]]] = None) -> None:
        self.failed = False
        self.progress = False
        self.redirects = redirects


async def _on_cluster(
    router: AsyncClusterRouter, engine: AsyncEngine, run: PublishRun, feeds: dict[str, Feed[Sent]]
) -> Optional[tuple[BaseException, list[Sent]]]:
    """Rounds of per-node streams until every feed is done, replanning the redirected
    queues on the refreshed map between rounds; the first failure (with every batch whose
    outcome a lost connection made unknown, on any node), or None."""
    patience: Optional[_Patience] = None  # starts when the cluster first gets in the way
    pending = [q for q, f in feeds.items() if not f.finished]
    while pending:
        if patience is None:
            patience = _Patience(router.retry_s, run.script.name)
        groups: dict[int, tuple[Connection, dict[str, Feed[Sent]]]] = {}
        try:
            for queue in pending:
                conn = await router.route(run.anchors[queue]).owner(patience)
                groups.setdefault(id(conn), (conn, {}))[1][queue] = feeds[queue]
        except ClusterUnavailable as exc:
            return exc, []  # some batches may have run: the caller hears which
        shared = _Round({})
        results = await asyncio.gather(
            *(_stream(conn, engine, run, group, shared) for conn, group in groups.values())
        )
        failures = [r for r in results if r is not None]
        if failures:
            return failures[0][0], [sent for _, lost in failures for sent in lost]
        pending = [q for q in pending if not feeds[q].finished]
        if not pending:
            break
        if shared.progress:
            patience = _Patience(router.retry_s, run.script.name)  # a new obstacle
        assert shared.redirects is not None
        try:
            await router.settle(
                [(router.route(run.anchors[q]).slot, r) for q, r in shared.redirects.items()],
                patience,
            )
        except ClusterUnavailable as exc:
            return exc, []
    return None


async def _stream(
    conn: Connection, engine: AsyncEngine, run: PublishRun, feeds: dict[str, Feed[Sent]],
    shared: _Round,
) -> Optional[tuple[BaseException, list[Sent]]]:
    """Send the feeds' batches once through on ``conn``; None when all were answered and
    booked (or redirected, in cluster mode), else the first failure and the batches whose
    outcome it made unknown."""
    redirects = shared.redirects
    what = run.script.name
    active = deque(q for q, f in feeds.items() if not f.finished)
    in_flight: deque[tuple[Sent, asyncio.Future[list[Any]]]] = deque()
    failure: Optional[BaseException] = None

    def put_back(sents: list[Sent]) -> None:
        # Never written (the socket failed first): they go again as they are, in order.
        for sent in reversed(sents):
            feeds[sent.queue].retry.appendleft(sent)

    def book(sent: Sent, replies: list[Any]) -> Optional[BaseException]:
        redirect = None if redirects is None else routing.redirect_of(replies[0])
        if redirect is not None:
            assert redirects is not None
            # It did not run; its queue's later batches would bounce too: replan them.
            feeds[sent.queue].retry.append(sent)  # in order, after any redirected before it
            if sent.queue in active:
                active.remove(sent.queue)
            if sent.queue not in redirects or redirects[sent.queue][0] == "MOVED":
                redirects[sent.queue] = redirect
            return None
        shared.progress = True
        return run.on_reply(sent, replies)

    while True:
        if failure is None and shared.failed:
            active.clear()  # another node failed: no more batches, in-flight still read
        if failure is None and len(in_flight) < WINDOW and active:
            try:
                link = await conn.link()
            except ServerUnreachable as exc:
                if redirects is None:
                    failure = exc
                    continue
                for queue in active:  # nothing more was sent: replan on a fresh map
                    redirects[queue] = ("CONNECT", "")
                active.clear()
                continue
            except Exception as exc:  # connecting failed: nothing more was sent
                failure = exc
                continue
            while len(in_flight) < WINDOW and active:
                queue = active.popleft()
                try:
                    sent = feeds[queue].next()
                except Exception as exc:
                    # An item that failed to encode: what is in flight still gets its
                    # replies, so the caller hears exactly what was written.
                    failure = exc
                    break
                if sent is None:
                    continue
                active.append(queue)
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
            shared.failed = True
            return exc, lost
        if _is_noscript(replies[0]):
            try:
                answered = await _rerun_noscript(conn, engine, run, in_flight, replies)
            except (ConnectionLost, NotSent) as exc:
                # None of them was booked: all their outcomes are unknown.
                cause = exc if isinstance(exc, ConnectionLost) else ConnectionLost(
                    "connection lost while re-sending after NOSCRIPT"
                )
                shared.failed = True
                return cause, [s for s, _ in in_flight]
        else:
            answered = [(sent, replies)]
        for sent, replies in answered:
            in_flight.popleft()
            refused = book(sent, replies)
            if refused is not None and failure is None:
                failure = refused  # no more batches go; those in flight are still booked
    if failure is not None:
        shared.failed = True
        return failure, []
    return None



async def _rerun_noscript(
    conn: Connection,
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
            loaded, *replies = await conn.request(load + sent.data, 3, run.script.name)
            if isinstance(loaded, ReplyError):
                break
        out.append((sent, replies))
    return out
