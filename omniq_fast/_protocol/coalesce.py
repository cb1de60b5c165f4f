"""Single publishes gathered into ``enqueue_batch`` calls: the asyncio client's automatic
batching.

Many tasks awaiting one ``publish`` each in the same event-loop turn are one batched script
call per queue (up to 1000 jobs), not one script call per job: the server runs one script
instead of hundreds, which is what makes concurrent publishing cost what ``publish_many``
costs. A batch leaves the keyspace the sequence of single enqueues would (the batched
script is tested against them); what each caller gets back is decided here:

* its job id, or :class:`~omniq_fast.errors.DuplicateJob` when the script skipped the job
  because its id exists (the single script's ``DUPLICATE``);
* for a refused or failed call, the error a single publish would have raised, one instance
  per caller (an exception object must not be raised in several tasks at once).

Each job is checked when ``publish`` is called (a bad argument raises there, in its own
caller, and nothing of it is queued), and encoded there as its part of the batch command;
only good jobs join a batch.
"""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any, Optional, Union

from ..errors import DuplicateJob, ProtocolError, ReplyError, lease_error, reply_error
from ..keys import queue_anchor
from .._options import EnqueueOptions, check_id, enqueue_options
from .._scripts import evalsha_head
from .calls import MAX_SCRIPT_BATCH, text

__all__ = ["checked_item", "batch_command", "outcomes", "copy_error", "MAX_SCRIPT_BATCH"]

#: Distinct option sets whose encoding is kept (a bound: gids may be many).
_TAILS_MAX = 1024


def checked_item(
    core: ModuleType,
    tails: dict[EnqueueOptions, bytes],
    queue: str,
    payload: Any,
    job_id: Optional[str],
    max_attempts: int,
    timeout_ms: int,
    backoff_ms: int,
    due_ms: int,
    gid: Optional[str],
    group_limit: int,
) -> tuple[str, str, bytes]:
    """``publish``'s arguments checked as a single publish checks them (in the same order:
    :func:`~omniq_fast._protocol.calls.checked_publish`), and encoded at once as the job's
    part of an ``enqueue_batch`` command (its id, payload and six options), so the payload is
    serialised once, here. The queue's anchor, the job's id, its part.

    ``tails`` keeps each option set's encoded arguments: publishes mostly share theirs.
    """
    anchor = queue_anchor(queue)  # the name is checked first, like every other argument
    body = core.dumps_payload(payload)
    options = enqueue_options(max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit)
    if job_id is None or job_id == "":
        job_id = core.new_ulid()
    else:
        job_id = check_id("job_id", job_id)
    tail = tails.get(options)
    if tail is None:
        if len(tails) >= _TAILS_MAX:
            tails.clear()
        tail = tails[options] = core.encode_args(options)
    return anchor, job_id, core.encode_args((job_id, body)) + tail


def batch_command(core: ModuleType, sha: bytes, anchor: str, now: int, parts: list[bytes]) -> bytes:
    """The ``enqueue_batch`` EVALSHA of the jobs whose :func:`checked_item` parts are
    ``parts``: the bytes ``encode_enqueue_batch`` makes for the same jobs and ids."""
    n = len(parts)
    head = b"*%d\r\n" % (6 + 8 * n) + core.encode_args(evalsha_head(sha, anchor) + (now, n))
    return b"".join([head, *parts])


def copy_error(exc: BaseException) -> BaseException:
    """A fresh instance of ``exc`` for one more caller (same type, message and fields)."""
    try:
        twin = copy.copy(exc)
    except Exception:  # an exception that cannot be copied: share the original
        return exc
    twin.__traceback__ = None
    return twin


def outcomes(queue: str, ids: list[str], reply: Any) -> list[Union[str, BaseException]]:
    """Each caller's result for a batch's reply: its id, or the error to raise."""
    if isinstance(reply, list) and reply and text(reply[0]) == "OK":
        try:
            skipped = {int(i) - 1 for i in reply[2:]}
        except (TypeError, ValueError):
            skipped = None
        if skipped is not None:
            if not skipped:
                return list(ids)  # the usual reply: every job was queued
            return [
                DuplicateJob(queue, job_id) if i in skipped else job_id
                for i, job_id in enumerate(ids)
            ]
    errors: list[Union[str, BaseException]]
    if isinstance(reply, ReplyError):
        errors = [reply]
        errors += [reply_error(str(reply)) for _ in ids[1:]]
    elif isinstance(reply, list) and len(reply) >= 2 and text(reply[0]) == "ERR":
        errors = [lease_error("ENQUEUE", text(reply[1])) for _ in ids]
    else:
        error = ProtocolError(f"unexpected ENQUEUE_BATCH reply: {reply!r}")
        errors = [error]
        errors += [copy_error(error) for _ in ids[1:]]
    return errors
