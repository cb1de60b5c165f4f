"""``publish_many``'s decisions: its batches, where each sent job ended, what to send again.

Both shells stream ``enqueue_batch`` calls (the blocking one with a thread per cluster
node, the asyncio one with a task per node); what a reply means for the ids of its batch,
which batches go again after a failure, and the error the caller finally sees are decided
here, once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from itertools import islice
from types import ModuleType
from collections import deque
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, Optional, TypeVar

from ..errors import (
    ClusterUnavailable,
    ConnectionLost,
    DuplicateJobs,
    InvalidArgument,
    ProtocolError,
    PublishManyError,
    ReplyError,
    ScriptError,
    did_not_run,
)
from ..keys import queue_anchor
from .._options import EnqueueOptions, check_int, check_jobs, enqueue_options
from .._scripts import script
from .calls import MAX_SCRIPT_BATCH, text

__all__ = [
    "Feed", "Sent", "Outcome", "PublishRun", "resendable", "chunks", "retry_delay", "publish_failure",
]  # fmt: skip


T = TypeVar("T")


class Feed(Generic[T]):
    """One queue's batches in sending order: those to send again first (``retry``), then
    the rest of its ``source``. Both shells' streams take batches from feeds."""

    __slots__ = ("retry", "source", "exhausted")

    def __init__(self, source: Iterator[T]) -> None:
        self.retry: deque[T] = deque()
        self.source = source
        self.exhausted = False

    def next(self) -> Optional[T]:
        if self.retry:
            return self.retry.popleft()
        if self.exhausted:
            return None
        try:
            return next(self.source)
        except StopIteration:
            self.exhausted = True
            return None

    @property
    def finished(self) -> bool:
        return self.exhausted and not self.retry


class Sent:
    """One enqueue batch: its queue, place in the call, ids and encoded bytes (kept so
    the batch can be sent again as it was)."""

    __slots__ = ("queue", "seq", "ids", "data", "maybe_ran")

    def __init__(self, queue: str, seq: int, ids: list[str], data: bytes) -> None:
        self.queue = queue
        self.seq = seq
        self.ids = ids
        self.data = data
        self.maybe_ran = False  # an earlier send's outcome was unknown


class Outcome:
    """Where each sent batch's jobs ended, filled from the replies. ``lock`` guards it
    where replies are booked from several threads (the blocking shell on a cluster: one
    thread per node); the asyncio shell needs none."""

    def __init__(self, lock: Optional[AbstractContextManager[Any]] = None) -> None:
        self.lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
        self.written: list[tuple[int, list[str]]] = []
        self.duplicates: list[tuple[int, list[str]]] = []
        self.unknown: list[Sent] = []
        self.refused: list[Sent] = []

    def reply(self, sent: Sent, reply: Any) -> Optional[BaseException]:
        """Book a batch's reply; an error to stop the run, or None."""
        if isinstance(reply, list) and reply and text(reply[0]) == "OK":
            skipped = {int(i) - 1 for i in reply[2:]}
            fresh = [job_id for i, job_id in enumerate(sent.ids) if i not in skipped]
            existing = [job_id for i, job_id in enumerate(sent.ids) if i in skipped]
            with self.lock:
                if sent.maybe_ran:
                    # The first send of this batch may have queued these: they exist now.
                    fresh, existing = sent.ids, []
                self.written.append((sent.seq, fresh))
                if existing:
                    self.duplicates.append((sent.seq, existing))
            return None
        with self.lock:
            if did_not_run(reply):
                self.refused.append(sent)
                return reply  # type: ignore[no-any-return]
            if isinstance(reply, list) and len(reply) >= 2 and text(reply[0]) == "ERR":
                self.refused.append(sent)  # the script checks its arguments before writing
                return ScriptError("ENQUEUE_BATCH", text(reply[1]))
            self.unknown.append(sent)
        if isinstance(reply, ReplyError):
            return reply  # may have failed part-way: Redis does not roll a script back
        return ProtocolError(f"unexpected ENQUEUE_BATCH reply: {reply!r}")

    def take_retries(self, lost: list[Sent]) -> list[Sent]:
        """The batches to send again (unknown or refused), in call order; forgets them."""
        for sent in lost:
            sent.maybe_ran = True
        for sent in self.unknown:
            sent.maybe_ran = True
        again = sorted(self.unknown + self.refused + lost, key=lambda b: b.seq)
        self.unknown, self.refused = [], []
        return again

    def written_to(self, queue: str, queue_of: dict[int, str]) -> list[str]:
        """The ids written to ``queue``, in call order."""
        return [i for seq, ids in sorted(self.written) if queue_of[seq] == queue for i in ids]


def resendable(cause: BaseException) -> bool:
    """Whether a failed run's batches may be sent again: their replies were lost, or the
    server refused them before running them. Enqueue is idempotent by job id, so a batch
    that did land is not queued twice."""
    return isinstance(cause, (ConnectionLost, ClusterUnavailable)) or did_not_run(cause)


def retry_delay(tries: int) -> float:
    """The pause before re-send number ``tries`` (from 1): 0.05 s doubling, at most 2 s."""
    return min(2.0, 0.05 * 2.0 ** (tries - 1))


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def publish_failure(outcome: Outcome, cause: BaseException, lost: list[Sent]) -> BaseException:
    """The error a stopped ``publish_many`` raises: its cause as it is when the call
    changed nothing, else a :class:`PublishManyError` saying where every sent id is."""
    unknown = [i for b in sorted(outcome.unknown + lost, key=lambda b: b.seq) for i in b.ids]
    written = [i for _, ids in sorted(outcome.written) for i in ids]
    dups = [i for _, ids in sorted(outcome.duplicates) for i in ids]
    refused = [i for b in sorted(outcome.refused, key=lambda b: b.seq) for i in b.ids]
    if not written and not unknown and not dups:
        return cause  # nothing was written: the typed cause says why
    return PublishManyError(
        f"publish_many stopped after {len(written)} jobs ({len(unknown)} unknown, "
        f"{len(refused)} refused, {len(dups)} duplicates): {cause}",
        written,
        unknown,
        duplicates=dups,
        not_written=refused,
    )


class PublishRun:
    """One ``publish_many_queues`` call: its checked arguments, the batches it encodes and
    the bookkeeping of their replies. The shells only send the batches and sleep.

    ``clock`` reads the time for each batch's ``now`` (batches of a long generator are
    encoded minutes apart); ``wake(queue)`` is the queue's encoded wake message; ``lock``
    is :class:`Outcome`'s.
    """

    def __init__(
        self,
        core: ModuleType,
        jobs_by_queue: Mapping[str, Iterable[Any]],
        options: tuple[int, int, int, int, Optional[str], int],
        batch_size: int,
        retry: int,
        clock: Callable[[], int],
        wake: Callable[[str], bytes],
        lock: Optional[AbstractContextManager[Any]] = None,
    ) -> None:
        self.anchors = {queue: queue_anchor(queue) for queue in jobs_by_queue}
        self.defaults: EnqueueOptions = enqueue_options(*options)
        clock()  # checks a now_ms_override, in the order the arguments are checked
        check_int("batch_size", batch_size, 1)
        check_int("retry", retry, 0)
        if batch_size > MAX_SCRIPT_BATCH:
            raise InvalidArgument(f"batch_size must be <= {MAX_SCRIPT_BATCH}")
        for jobs in jobs_by_queue.values():
            if isinstance(jobs, (list, tuple)):
                check_jobs(jobs, self.defaults)
        self.jobs_by_queue = jobs_by_queue
        self.script = script("enqueue_batch")
        self.outcome = Outcome(lock)
        self.retry = retry
        self.tries = 0
        self._core = core
        self._batch_size = batch_size
        self._clock = clock
        self._wake = wake
        self._queue_of: dict[int, str] = {}
        self._seq = iter(range(1 << 62))

    def batches(self, queue: str) -> Iterator[Sent]:
        """The queue's jobs as encoded batches (the EVALSHA, then the wake), lazily."""
        anchor, wake, sha = self.anchors[queue], self._wake(queue), self.script.sha
        encode = self._core.encode_enqueue_batch
        for chunk in chunks(self.jobs_by_queue[queue], self._batch_size):
            data, ids = encode(sha, anchor, self._clock(), chunk, self.defaults)
            sent = Sent(queue, next(self._seq), ids, data + wake)
            self._queue_of[sent.seq] = queue
            yield sent

    def on_reply(self, sent: Sent, replies: list[Any]) -> Optional[BaseException]:
        """Book a batch's replies (the enqueue's, then the wake's); an error stops the run."""
        return self.outcome.reply(sent, replies[0])

    def again(self, cause: BaseException, lost: list[Sent]) -> Optional[list[Sent]]:
        """After a failure: the batches to send again, in call order (the caller sleeps
        :func:`retry_delay` of :attr:`tries` first), or None to give up."""
        if self.tries >= self.retry or not resendable(cause):
            return None
        self.tries += 1
        return self.outcome.take_retries(lost)

    def failure(self, cause: BaseException, lost: list[Sent]) -> BaseException:
        return publish_failure(self.outcome, cause, lost)

    def result(self) -> dict[str, list[str]]:
        """Every queue's written ids, in order; raises :class:`DuplicateJobs` if some ids
        existed already."""
        outcome = self.outcome
        written = {q: outcome.written_to(q, self._queue_of) for q in self.jobs_by_queue}
        if outcome.duplicates:
            dups = [i for _, ids in sorted(outcome.duplicates) for i in ids]
            raise DuplicateJobs(
                f"publish_many wrote {sum(map(len, written.values()))} jobs; {len(dups)} not "
                f"written again because their ids exist (first: {dups[0]!r})",
                [i for ids in written.values() for i in ids],
                [],
                duplicates=dups,
            )
        return written
