"""Bulk operations: many jobs per script call, many script calls per write.

Each ``*_many`` method leaves exactly the keyspace the same sequence of single calls would
(the batched scripts are tested against N single calls of the official SDK), at a fraction
of the round trips and of the server's CPU.
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from ._base import ClientBase
from .errors import ConnectionLost, InvalidArgument, OmniqError
from .pipelines import QueueStream, StreamsFailed, run_streams
from .keys import queue_anchor
from .options import check_int, enqueue_options
from .scripts import script
from .transport import Batch
from .types import JobResult, Paused, ReservedJob

__all__ = ["BulkOps", "PublishManyError", "MAX_SCRIPT_BATCH"]

#: Most jobs one batched script call takes (the scripts refuse more).
MAX_SCRIPT_BATCH = 1000

Lease = Union[ReservedJob, Sequence[str]]


class PublishManyError(OmniqError):
    """``publish_many`` stopped part-way; nothing is lost track of.

    ``written`` holds the ids known to be queued, ``unknown`` those sent whose outcome is
    unknown (the connection broke before their reply), and the cause is chained. Ids not in
    either list were never sent.
    """

    def __init__(self, message: str, written: list[str], unknown: list[str]) -> None:
        super().__init__(message)
        self.written = written
        self.unknown = unknown


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
    ) -> list[str]:
        """Queue every job of ``jobs`` and return their ids, in order.

        Items are payloads (dict/list) sharing the keyword options, or
        :class:`~omniq_fast.Job` objects with options of their own. ``jobs`` may be any
        iterable, a generator of millions included: it is encoded ``batch_size`` jobs per
        script call while the previous call runs on the server, so memory stays flat.

        Each batch is checked whole before it is sent. An invalid item in the first batch
        raises its typed error with nothing written; later, a
        :class:`PublishManyError` says which ids were written and which are unknown.
        """
        return self.publish_many_queues(
            {queue: jobs}, max_attempts=max_attempts, timeout_ms=timeout_ms,
            backoff_ms=backoff_ms, due_ms=due_ms, gid=gid, group_limit=group_limit,
            now_ms_override=now_ms_override, batch_size=batch_size,
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
    ) -> dict[str, list[str]]:
        """:meth:`publish_many` for several queues at once: ``{queue: jobs}`` in, ``{queue:
        ids}`` out.

        On a Redis Cluster each queue's batches go to the master owning it, one pipeline
        per master, the masters in parallel; queues on one node share its connection.
        If the cluster moves a queue meanwhile, its batches follow it (a redirected batch
        did not run, and is sent again to the new owner). A :class:`PublishManyError`
        lists the written and unknown ids of every queue.
        """
        anchors = {queue: queue_anchor(queue) for queue in jobs_by_queue}
        defaults = enqueue_options(max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit)
        check_int("now_ms_override", now_ms_override, 0)
        check_int("batch_size", batch_size, 1)
        if batch_size > MAX_SCRIPT_BATCH:
            raise InvalidArgument(f"batch_size must be <= {MAX_SCRIPT_BATCH}")
        enqueue = script("enqueue_batch")
        core = self._core

        def batches(queue: str, jobs: Iterable[Any]) -> Iterator[Batch[tuple[str, list[str]]]]:
            anchor, wake = anchors[queue], self._wake_command(queue)
            for chunk in _chunks(jobs, batch_size):
                now = self._now(now_ms_override)
                data, ids = core.encode_enqueue_batch(enqueue.sha, anchor, now, chunk, defaults)
                yield Batch(data + wake, 2, (queue, ids))  # the EVALSHA, then the wake

        written: dict[str, list[str]] = {queue: [] for queue in jobs_by_queue}

        def on_reply(tag: tuple[str, list[str]], replies: list[Any]) -> None:
            self._status("ENQUEUE_BATCH", replies[0])
            written[tag[0]].extend(tag[1])

        streams = [QueueStream(anchors[q], batches(q, jobs)) for q, jobs in jobs_by_queue.items()]
        try:
            run_streams(self, streams, enqueue, on_reply)
        except StreamsFailed as failed:
            done = [job_id for ids in written.values() for job_id in ids]
            cause = failed.cause
            if not done and not isinstance(cause, ConnectionLost):
                raise cause from None
            unknown = [job_id for _, ids in failed.unknown for job_id in ids]
            raise PublishManyError(
                f"publish_many stopped after {len(done)} jobs: {cause}", done, unknown
            ) from cause
        return written

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
