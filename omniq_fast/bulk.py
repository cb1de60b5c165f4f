"""Bulk operations: many jobs per script call, many script calls per write.

Each ``*_many`` method leaves exactly the keyspace the same sequence of single calls would
(the batched scripts are tested against N single calls of the official SDK), at a fraction
of the round trips and of the server's CPU.
"""

from __future__ import annotations

import threading
import time
from itertools import islice
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from ._base import ClientBase, text
from .errors import (
    ClusterUnavailable,
    ConnectionLost,
    InvalidArgument,
    OmniqError,
    ProtocolError,
    ReplyError,
    ScriptError,
    did_not_run,
)
from .pipelines import QueueStream, StreamsFailed, run_streams
from .keys import queue_anchor
from .options import check_int, check_jobs, enqueue_options
from .scripts import script
from .transport import Batch
from .types import JobResult, Paused, ReservedJob

__all__ = ["BulkOps", "PublishManyError", "DuplicateJobs", "MAX_SCRIPT_BATCH"]

#: Most jobs one batched script call takes (the scripts refuse more).
MAX_SCRIPT_BATCH = 1000

Lease = Union[ReservedJob, Sequence[str]]


class PublishManyError(OmniqError):
    """``publish_many`` stopped part-way, or could not write every job; nothing is lost
    track of.

    Every id of the call ends in exactly one place: ``written`` (queued by this call),
    ``unknown`` (sent, but the outcome is unknown: the connection broke, or a script failed
    part-way, before the reply), ``duplicates`` (not written: a job with that id exists)
    or ``not_written`` (sent and refused by the server before anything changed —
    ``OOM``, ``LOADING``, ``BUSY``..., see :class:`~omniq_fast.errors.ServerRefused`).
    Ids in none of them were never sent. The cause is chained.
    """

    def __init__(
        self,
        message: str,
        written: list[str],
        unknown: list[str],
        *,
        duplicates: Optional[list[str]] = None,
        not_written: Optional[list[str]] = None,
    ) -> None:
        super().__init__(message)
        self.written = written
        self.unknown = unknown
        self.duplicates: list[str] = duplicates or []
        self.not_written: list[str] = not_written or []


class DuplicateJobs(PublishManyError, ValueError):
    """``publish_many`` wrote every job except those whose id exists (``duplicates``):
    the many-job form of :class:`~omniq_fast.errors.DuplicateJob`."""


class _Sent:
    """One enqueue batch: its queue, place in the call, ids and encoded bytes (kept so
    the batch can be sent again as it was)."""

    __slots__ = ("queue", "seq", "ids", "data", "maybe_ran")

    def __init__(self, queue: str, seq: int, ids: list[str], data: bytes) -> None:
        self.queue = queue
        self.seq = seq
        self.ids = ids
        self.data = data
        self.maybe_ran = False  # an earlier send's outcome was unknown


class _Outcome:
    """Where each sent batch's jobs ended, filled from the replies (several threads on a
    cluster: one lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.written: list[tuple[int, list[str]]] = []
        self.duplicates: list[tuple[int, list[str]]] = []
        self.unknown: list[_Sent] = []
        self.refused: list[_Sent] = []

    def reply(self, sent: _Sent, reply: Any) -> Optional[BaseException]:
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

    def take_retries(self, lost: list[_Sent]) -> list[_Sent]:
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


def _resendable(cause: BaseException) -> bool:
    """Whether a failed run's batches may be sent again: their replies were lost, or the
    server refused them before running them. Enqueue is idempotent by job id, so a batch
    that did land is not queued twice."""
    return isinstance(cause, (ConnectionLost, ClusterUnavailable)) or did_not_run(cause)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class BulkOps(ClientBase):
    """The ``*_many`` methods of :class:`~omniq_fast.Client`."""

    def publish_many(
        self,
        queue: str,
        jobs: Iterable[Any],
        *,
        max_attempts: int = 3,
        timeout_ms: int = 30000,
        backoff_ms: int = 5000,
        due_ms: int = 0,
        gid: Optional[str] = None,
        group_limit: int = 0,
        now_ms_override: int = 0,
        batch_size: int = 500,
        retry: int = 0,
    ) -> list[str]:
        """Queue every job of ``jobs`` and return their ids, in order.

        Items are payloads (dict/list) sharing the keyword options, or
        :class:`~omniq_fast.Job` objects with options of their own. ``jobs`` may be any
        iterable, a generator of millions included: it is encoded ``batch_size`` jobs per
        script call while the previous call runs on the server, so memory stays flat.

        Bad input: when ``jobs`` is a list or tuple, the options and ids of every item are
        checked before anything is written (payloads are encoded batch by batch, to keep
        one pass over them). For other iterables each batch is checked whole before it is
        sent. An invalid item raises its typed error when nothing was written yet;
        later, a :class:`PublishManyError` says which ids were written.

        Publish is idempotent by job id: an item whose ``job_id`` exists already is not
        written; once every other item is, :class:`DuplicateJobs` lists them.

        ``retry=N`` sends batches whose outcome is unknown (a lost connection, a timeout)
        or that the server refused before running them (``LOADING``, ``BUSY``, ``OOM``...)
        again, up to N times with a growing pause (0.05 s doubling, at most 2 s), and then
        goes on with the rest. A re-sent job that landed the first time is skipped by the
        server: it is reported written. (Only a job that was completed, trimmed from the
        100 kept completed jobs, or removed, between the lost reply and the re-send would
        be queued a second time.)
        """
        return self.publish_many_queues(
            {queue: jobs}, max_attempts=max_attempts, timeout_ms=timeout_ms,
            backoff_ms=backoff_ms, due_ms=due_ms, gid=gid, group_limit=group_limit,
            now_ms_override=now_ms_override, batch_size=batch_size, retry=retry,
        )[queue]  # fmt: skip

    def publish_many_queues(
        self,
        jobs_by_queue: Mapping[str, Iterable[Any]],
        *,
        max_attempts: int = 3,
        timeout_ms: int = 30000,
        backoff_ms: int = 5000,
        due_ms: int = 0,
        gid: Optional[str] = None,
        group_limit: int = 0,
        now_ms_override: int = 0,
        batch_size: int = 500,
        retry: int = 0,
    ) -> dict[str, list[str]]:
        """:meth:`publish_many` for several queues at once: ``{queue: jobs}`` in, ``{queue:
        ids}`` out.

        On a Redis Cluster each queue's batches go to the master owning it, one pipeline
        per master, the masters in parallel; queues on one node share its connection.
        If the cluster moves a queue meanwhile, its batches follow it (a redirected batch
        did not run, and is sent again to the new owner). A :class:`PublishManyError`
        lists the written, unknown, duplicate and refused ids of every queue.
        """
        anchors = {queue: queue_anchor(queue) for queue in jobs_by_queue}
        defaults = enqueue_options(max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit)
        self._now(now_ms_override)  # checks it
        check_int("batch_size", batch_size, 1)
        check_int("retry", retry, 0)
        if batch_size > MAX_SCRIPT_BATCH:
            raise InvalidArgument(f"batch_size must be <= {MAX_SCRIPT_BATCH}")
        for jobs in jobs_by_queue.values():
            if isinstance(jobs, (list, tuple)):
                check_jobs(jobs, defaults)
        enqueue = script("enqueue_batch")
        core = self._core
        outcome = _Outcome()
        queue_of: dict[int, str] = {}
        seq = iter(range(1 << 62))

        def batches(queue: str, jobs: Iterable[Any]) -> Iterator[Batch[_Sent]]:
            anchor, wake = anchors[queue], self._wake_command(queue)
            for chunk in _chunks(jobs, batch_size):
                now = self._now(now_ms_override)
                data, ids = core.encode_enqueue_batch(enqueue.sha, anchor, now, chunk, defaults)
                sent = _Sent(queue, next(seq), ids, data + wake)  # the EVALSHA, then the wake
                queue_of[sent.seq] = queue
                yield Batch(sent.data, 2, sent)

        def on_reply(sent: _Sent, replies: list[Any]) -> Optional[BaseException]:
            return outcome.reply(sent, replies[0])

        streams = {q: QueueStream(anchors[q], batches(q, j)) for q, j in jobs_by_queue.items()}
        pending = list(streams.values())
        tries = 0
        while True:
            try:
                run_streams(self, pending, enqueue, on_reply)
                break
            except StreamsFailed as failed:
                cause = failed.cause
                if tries < retry and _resendable(cause):
                    tries += 1
                    time.sleep(min(2.0, 0.05 * 2 ** (tries - 1)))
                    for sent in reversed(outcome.take_retries(list(failed.unknown))):
                        streams[sent.queue].retry.appendleft(Batch(sent.data, 2, sent))
                    pending = [s for s in streams.values() if not s.finished]
                    continue
                raise self._publish_failure(outcome, failed) from cause
        written = {q: outcome.written_to(q, queue_of) for q in jobs_by_queue}
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

    @staticmethod
    def _publish_failure(outcome: _Outcome, failed: StreamsFailed) -> BaseException:
        """The error a stopped ``publish_many`` raises: its cause as it is when the call
        changed nothing, else a :class:`PublishManyError` saying where every sent id is."""
        cause = failed.cause
        lost: list[_Sent] = list(failed.unknown)
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

    def reserve_many(
        self, queue: str, n: int, *, now_ms_override: int = 0
    ) -> Union[list[ReservedJob], Paused]:
        """Lease up to ``n`` jobs in one call, as ``n`` single reserves would (lane
        alternation, group limits); ``[]`` when nothing is ready, ``Paused`` if paused."""
        anchor = queue_anchor(queue)
        check_int("n", n, 1)
        if n > MAX_SCRIPT_BATCH:
            raise InvalidArgument(f"n must be <= {MAX_SCRIPT_BATCH}")
        reply = self._run("reserve_batch", anchor, self._now(now_ms_override), n)
        return self._core.parse_reserve_batch_reply(reply)  # type: ignore[no-any-return]

    def ack_success_many(
        self, queue: str, leases: Sequence[Lease], *, now_ms_override: int = 0
    ) -> list[JobResult]:
        """Ack many leased jobs as completed; one :class:`JobResult` per lease, in order
        (``"OK"``, or ``"ERR"`` with the lease error's reason). A lease is a
        ``ReservedJob`` or a ``(job_id, lease_token)`` pair."""
        return self._per_lease("ack_success_batch", queue, leases, None, now_ms_override, 1)

    def ack_fail_many(
        self,
        queue: str,
        leases: Sequence[Lease],
        errors: Optional[Sequence[Optional[str]]] = None,
        *,
        now_ms_override: int = 0,
    ) -> list[JobResult]:
        """Report many failed attempts, ``errors[i]`` being lease ``i``'s error text (or
        ``None``). Results are ``"RETRY"`` (``ms`` = due time), ``"FAILED"`` or ``"ERR"``."""
        if errors is None:
            errors = [None] * len(leases)
        elif len(errors) != len(leases):
            raise InvalidArgument("errors must have one entry per lease")
        return self._per_lease("ack_fail_batch", queue, leases, errors, now_ms_override, 2)

    def heartbeat_many(
        self, queue: str, leases: Sequence[Lease], *, now_ms_override: int = 0
    ) -> list[JobResult]:
        """Extend many leases; ``"OK"`` results carry the new ``lock_until_ms`` in ``ms``."""
        return self._per_lease("heartbeat_batch", queue, leases, None, now_ms_override, 2)

    def release_many(
        self, queue: str, leases: Sequence[Lease], *, now_ms_override: int = 0
    ) -> list[JobResult]:
        """Give back leased jobs that were never started, as if they had not been reserved.

        For the graceful shutdown of a consumer that prefetches (``reserve_many``): the jobs
        it holds but has not begun go back to the head of their lanes, in their order, for
        any consumer to take at once, instead of sitting in ``active`` until their leases
        expire and ``reap_expired`` counts them as failed attempts (with their backoff).
        Pass the leases in the order they were reserved. Do not release a job whose handler
        ran: its effects would happen again.

        One :class:`JobResult` per lease, in order: ``"OK"``, or ``"ERR"`` with the lease
        error's reason (``TOKEN_REQUIRED``, ``TOKEN_MISMATCH``, ``NOT_ACTIVE``), checked as
        ``ack_success`` checks it. The attempt count goes back down; what cannot be restored
        (which lane ``reserve`` tries first, the lease counter, ``groups:ready`` scores) is
        listed in ``omniq_fast/lua/release_batch.lua``.
        """
        if len(leases) <= MAX_SCRIPT_BATCH:
            return self._per_lease("release_batch", queue, leases, None, now_ms_override, 1)
        # Each call pushes its jobs onto the heads of their lanes, so the calls go from the
        # last 1000 leases to the first, all at one now.
        now = self._now(now_ms_override)
        starts = range(0, len(leases), MAX_SCRIPT_BATCH)
        parts: dict[int, list[JobResult]] = {}
        for start in reversed(starts):
            chunk = leases[start : start + MAX_SCRIPT_BATCH]
            parts[start] = self._per_lease("release_batch", queue, chunk, None, now, 1)
        return [result for start in starts for result in parts[start]]

    def _per_lease(
        self,
        name: str,
        queue: str,
        leases: Sequence[Lease],
        errors: Optional[Sequence[Optional[str]]],
        now_ms_override: int,
        width: int,
    ) -> list[JobResult]:
        """Run per-lease batch script ``name`` over ``leases``, 1000 per call."""
        anchor = queue_anchor(queue)
        now = self._now(now_ms_override)
        batch = script(name)
        core = self._core
        results: list[JobResult] = []
        for start in range(0, len(leases), MAX_SCRIPT_BATCH):
            end = start + MAX_SCRIPT_BATCH
            data, ids = core.encode_lease_batch(
                batch.sha, anchor, now, leases[start:end], None if errors is None else errors[start:end]
            )
            reply = self._at(anchor).run_encoded(batch, data)
            results.extend(core.parse_job_results(reply, ids, width))
        return results
