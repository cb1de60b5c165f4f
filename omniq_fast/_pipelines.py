"""Streams of batched script calls for many queues: one pipeline per node, nodes in parallel.

``publish_many`` hands its batches here. Each queue's batches go to the node that owns the
queue (in standalone mode, the one server): the queues of one node share a single
connection, their batches interleaved, with the next batch on the wire while the node runs
the current one; different nodes run at the same time, one thread each.

In a cluster a batch can come back redirected (``MOVED``, ``ASK``, ``TRYAGAIN``,
``CLUSTERDOWN``), which means it did not run. That queue stops feeding its node; once the
node's stream is drained, its redirected batches (in their order) and its remaining source
are planned again on the refreshed map. Scripts are never followed through ``ASK``, for the
reason given in :mod:`omniq_fast._cluster`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TypeVar

from ._cluster import _CONNECT_ERRORS, SlotRoute, _Patience, redirect_of
from ._protocol.streams import Feed, PublishRun, Sent, retry_delay
from .errors import ClusterUnavailable, ConnectionLost
from ._scripts import Script
from ._transport import Batch, Transport

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["QueueStream", "run_streams", "StreamsFailed", "publish_many"]

T = TypeVar("T")


class QueueStream(Feed[Batch[T]]):
    """One queue's batches (a :class:`~omniq_fast._protocol.streams.Feed`) and where they
    go: ``redirect`` is the redirection seen this round, if any."""

    __slots__ = ("anchor", "redirect")

    def __init__(self, anchor: str, source: Iterator[Batch[T]]) -> None:
        super().__init__(source)
        self.anchor = anchor
        self.redirect: Optional[tuple[str, str]] = None  # (kind, address) seen this round


class StreamsFailed(Exception):
    """The first failure of any node's stream (``cause``), and the tags whose batches were
    in flight when a connection broke (``unknown``)."""

    def __init__(self, cause: BaseException, unknown: list[Any]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.unknown = unknown


def run_streams(
    engine: Engine,
    streams: list[QueueStream[T]],
    script: Script,
    on_reply: Callable[[T, list[Any]], Optional[BaseException]],
) -> None:
    """Send every stream's batches of ``script`` calls; ``on_reply(tag, replies)`` is
    called for each batch that got its replies (redirections aside), in each queue's order
    (from several threads when the queues live on several nodes). It returns an error to
    stop the run (a batch the server refused), or None. Raises :class:`StreamsFailed` on
    the first error; every node then stops taking new batches and still reads, and hands
    to ``on_reply``, the replies of what it has in flight, so no sent batch goes unheard
    (except on a lost connection: those are in ``unknown``)."""
    router = engine.mode()
    stop = threading.Event()
    failures: list[BaseException] = []
    unknown: list[Any] = []
    lock = threading.Lock()
    patience: Optional[_Patience] = None  # starts when the cluster first gets in the way
    progress = threading.Event()  # some batch ran this round

    def fail(exc: BaseException) -> None:
        with lock:
            failures.append(exc)
            if isinstance(exc, ConnectionLost):
                unknown.extend(exc.unknown)
        stop.set()

    def feed(group: list[QueueStream[T]]) -> Iterator[Batch[tuple[QueueStream[T], Batch[T]]]]:
        active = deque(group)
        while active and not stop.is_set():
            stream = active.popleft()
            if stream.redirect is not None:
                continue  # its later batches would bounce too; replan them
            batch = stream.next()
            if batch is None:
                continue
            active.append(stream)
            yield Batch(batch.data, batch.count, (stream, batch))

    def run_node(transport: Transport, group: list[QueueStream[T]]) -> None:
        try:
            for (stream, batch), replies in transport.stream(feed(group), script):
                redirect = redirect_of(replies[0]) if router is not None else None
                if redirect is not None:
                    stream.redirect = redirect
                    stream.retry.append(batch)  # in order: later ones bounce after it
                else:
                    refused = on_reply(batch.tag, replies)
                    if refused is not None:
                        fail(refused)  # the feed stops; what is in flight is still read
                    else:
                        progress.set()
        except ConnectionLost as exc:
            exc.unknown = [batch.tag for _, batch in exc.unknown]
            fail(exc)
        except Exception as exc:
            # redis-py's own connection errors come only from connecting, before anything
            # was sent (ours after sending are ConnectionLost): replan on a fresh map.
            if router is not None and isinstance(exc, _CONNECT_ERRORS):
                for stream in group:
                    stream.redirect = ("CONNECT", "")
                return
            fail(exc)

    pending = list(streams)
    while pending and not stop.is_set():
        if progress.is_set():
            patience = None  # a new obstacle gets the whole retry budget again
            progress.clear()
        if router is not None and patience is None:
            patience = _Patience(router.retry_s, script.name)
        try:
            work = _plan(engine, pending, patience)
        except ClusterUnavailable as exc:
            fail(exc)  # some batches may have run: the caller must hear which
            break
        if len(work) == 1:
            run_node(*work[0])
        else:
            threads = [threading.Thread(target=run_node, args=w, daemon=True) for w in work]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        pending = [s for s in pending if not s.finished]
        if not pending or stop.is_set() or router is None or patience is None:
            break
        try:
            router.settle(
                [(router.route(s.anchor).slot, s.redirect) for s in pending if s.redirect],
                patience,
            )
        except ClusterUnavailable as exc:
            fail(exc)
            break
    if failures:
        raise StreamsFailed(failures[0], unknown)


def _plan(
    engine: Engine, streams: list[QueueStream[T]], patience: Optional[_Patience]
) -> list[tuple[Transport, list[QueueStream[T]]]]:
    """Group the streams by the node that owns each queue now."""
    groups: dict[int, tuple[Transport, list[QueueStream[T]]]] = {}
    for stream in streams:
        stream.redirect = None
        route = engine.at(stream.anchor)
        if isinstance(route, SlotRoute):
            assert patience is not None
            transport = route.owner(patience)
        else:
            transport = route
        groups.setdefault(id(transport), (transport, []))[1].append(stream)
    return list(groups.values())



def publish_many(engine: Engine, run: PublishRun) -> dict[str, list[str]]:
    """Stream a ``publish_many_queues`` call's batches; send again what ``run`` says
    may go again after a failure (sleeping between tries); its result or its error."""
    streams = {
        q: QueueStream(run.anchors[q], (Batch(s.data, 2, s) for s in run.batches(q)))
        for q in run.jobs_by_queue
    }
    pending = list(streams.values())
    while True:
        try:
            run_streams(engine, pending, run.script, run.on_reply)
            return run.result()
        except StreamsFailed as failed:
            lost: list[Sent] = list(failed.unknown)
            again = run.again(failed.cause, lost)
            if again is None:
                raise run.failure(failed.cause, lost) from failed.cause
            time.sleep(retry_delay(run.tries))
            for sent in reversed(again):
                streams[sent.queue].retry.appendleft(Batch(sent.data, 2, sent))
            pending = [s for s in streams.values() if not s.finished]
