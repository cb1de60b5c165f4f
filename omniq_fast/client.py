"""The synchronous client: :class:`Client` and the drop-in :class:`OmniqClient`.

One implementation serves both. ``Client`` takes the queue (and payload) positionally;
``OmniqClient`` only changes the constructor to the official SDK's keywords, so every call
written against ``omniq.client.OmniqClient`` (all keyword arguments) works unchanged.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

import redis as redis_py

from ._base import now_ms, text
from .bulk import BulkOps
from .errors import AdminError, DuplicateJob, InvalidArgument, ProtocolError, ScriptError
from .keys import REMOVE_LANES, counter_anchor, job_key, paused_key, queue_anchor
from .options import check_id, check_int, enqueue_options
from .types import AckFailResult, BatchResultItem, ReserveResult

if TYPE_CHECKING:
    from .consumer import ConsumerStats, Handler, LineLogger
    from .observe import ConsumerObserver

__all__ = ["Client", "OmniqClient", "now_ms", "MAX_BATCH"]

#: Most ids ``retry_failed_batch`` / ``remove_jobs_batch`` take in one call (script limit).
MAX_BATCH = 100


def _parse_batch(op: str, reply: object) -> list[BatchResultItem]:
    """Flat ``id, "OK"`` / ``id, "ERR", reason`` triples into result items."""
    if not isinstance(reply, list):
        raise ProtocolError(f"unexpected {op} reply: {reply!r}")
    if len(reply) >= 2 and text(reply[0]) == "ERR":
        raise AdminError(op, text(reply[1]))
    items: list[BatchResultItem] = []
    i = 0
    while i + 1 < len(reply):
        job_id, status = text(reply[i]), text(reply[i + 1])
        if status == "OK":
            items.append(BatchResultItem(job_id, "OK"))
            i += 2
        elif status == "ERR" and i + 2 < len(reply):
            items.append(BatchResultItem(job_id, "ERR", text(reply[i + 2])))
            i += 3
        else:
            raise ProtocolError(f"unexpected {op} reply: {reply!r}")
    if i != len(reply):
        raise ProtocolError(f"unexpected {op} reply: {reply!r}")
    return items


class Client(BulkOps):
    """A connection to one OmniQ server (Redis or Valkey) and every queue operation.

    ``url`` is a redis-py URL (``redis://``, ``rediss://`` for TLS, ``unix://``), with ACL
    user and password in it if needed; or pass a ready ``redis.Redis`` as ``redis=``
    (its ``decode_responses`` setting does not matter). Extra keyword arguments go to
    ``redis.Redis.from_url`` (``socket_timeout=...``). Use as a context manager or call
    :meth:`close`.
    """

    # ------------------------------------------------------------------ producing

    def publish(
        self,
        queue: str,
        payload: Any,
        *,
        job_id: Optional[str] = None,
        max_attempts: int = 3,
        timeout_ms: int = 30000,
        backoff_ms: int = 5000,
        due_ms: int = 0,
        gid: Optional[str] = None,
        group_limit: int = 0,
        now_ms_override: int = 0,
    ) -> str:
        """Queue a job and return its id.

        ``payload`` must be a dict or list (or a dataclass / pydantic model, converted
        first). ``due_ms`` in the future delays the job until then. ``gid`` puts it in a
        FIFO group that runs at most ``group_limit`` jobs at once (the first publisher to
        set a limit wins; 0 leaves it unset, which means 1). Every argument is checked
        before anything is written.

        Idempotent by job id: if a job with ``job_id`` exists in the queue (any state,
        completed and failed included, until it is removed or trimmed), nothing is
        written and :class:`~omniq_fast.errors.DuplicateJob` is raised (the official SDK
        overwrites the job and queues it again). So a publish whose reply was lost
        (:class:`~omniq_fast.errors.ConnectionLost`) can be sent again with the same id.
        """
        queue_anchor(queue)  # the name is checked first, like every other argument
        body = self._core.dumps_payload(payload)
        opts = enqueue_options(max_attempts, timeout_ms, backoff_ms, due_ms, gid, group_limit)
        if job_id is None or job_id == "":
            job_id = self._core.new_ulid()
        else:
            check_id("job_id", job_id)
        attempts, timeout, backoff, due, group, limit = opts
        reply = self._run_and_wake(
            "enqueue", queue, job_id, body, attempts, timeout, backoff,
            self._now(now_ms_override), due, group, limit,
        )  # fmt: skip
        if isinstance(reply, list) and reply and text(reply[0]) == "DUPLICATE":
            raise DuplicateJob(queue, job_id)
        self._status("ENQUEUE", reply)
        return job_id

    #: The official SDK's second name for :meth:`publish` (same checks, same encoding).
    publish_json = publish

    # ------------------------------------------------------------------ consuming

    def reserve(self, queue: str, *, now_ms_override: int = 0) -> ReserveResult:
        """Lease the next job: ``ReservedJob``, ``Paused`` if the queue is paused, or
        ``None`` when nothing is ready."""
        anchor = queue_anchor(queue)
        reply = self._run("reserve", anchor, self._now(now_ms_override))
        return self._core.parse_reserve_reply(reply)  # type: ignore[no-any-return]

    def heartbeat(
        self, queue: str, job_id: str, lease_token: str, *, now_ms_override: int = 0
    ) -> int:
        """Extend a lease; returns the new ``lock_until_ms``.

        Raises :class:`~omniq_fast.errors.TokenRequired`, ``TokenMismatch`` or ``NotActive``
        when the lease is not this caller's any more.
        """
        anchor = queue_anchor(queue)
        reply = self._run(
            "heartbeat", anchor, check_id("job_id", job_id), self._now(now_ms_override),
            lease_token,
        )  # fmt: skip
        ok = self._status("HEARTBEAT", reply)
        return int(ok[1])

    def ack_success(
        self, queue: str, job_id: str, lease_token: str, *, now_ms_override: int = 0
    ) -> None:
        """Mark a leased job completed (lease errors as for :meth:`heartbeat`)."""
        anchor = queue_anchor(queue)
        reply = self._run(
            "ack_success", anchor, check_id("job_id", job_id), self._now(now_ms_override),
            lease_token,
        )  # fmt: skip
        self._status("ACK_SUCCESS", reply)

    def ack_fail(
        self,
        queue: str,
        job_id: str,
        lease_token: str,
        *,
        error: Optional[str] = None,
        now_ms_override: int = 0,
    ) -> AckFailResult:
        """Report a failed attempt: ``("RETRY", due_ms)`` or ``("FAILED", None)`` once
        ``max_attempts`` is used up. ``error`` (first 4096 bytes) is kept on the job."""
        anchor = queue_anchor(queue)
        argv: list[bytes | str | int] = [
            check_id("job_id", job_id), self._now(now_ms_override), lease_token,
        ]  # fmt: skip
        if error:
            argv.append(str(error))
        reply = self._run("ack_fail", anchor, *argv)
        if isinstance(reply, list) and reply:
            head = text(reply[0])
            if head == "RETRY" and len(reply) >= 2:
                return ("RETRY", int(reply[1]))
            if head == "FAILED":
                return ("FAILED", None)
        self._status("ACK_FAIL", reply)
        raise ProtocolError(f"unexpected ACK_FAIL reply: {reply!r}")

    def promote_delayed(
        self, queue: str, *, max_promote: int = 1000, now_ms_override: int = 0
    ) -> int:
        """Move up to ``max_promote`` due delayed jobs to their lane; returns how many."""
        anchor = queue_anchor(queue)
        check_int("max_promote", max_promote, 1)
        reply = self._run("promote_delayed", anchor, self._now(now_ms_override), max_promote)
        return int(self._status("PROMOTE_DELAYED", reply)[1])

    def reap_expired(self, queue: str, *, max_reap: int = 1000, now_ms_override: int = 0) -> int:
        """Retry (or fail) up to ``max_reap`` jobs whose lease expired; returns how many."""
        anchor = queue_anchor(queue)
        check_int("max_reap", max_reap, 1)
        reply = self._run("reap_expired", anchor, self._now(now_ms_override), max_reap)
        return int(self._status("REAP_EXPIRED", reply)[1])

    def job_timeout_ms(self, queue: str, job_id: str) -> int:
        """The job's ``timeout_ms`` (0 if the job or field is missing)."""
        key = job_key(queue, job_id)
        raw = self._at(key).command(b"HGET", key, b"timeout_ms")
        try:
            return int(raw) if raw else 0
        except ValueError:
            return 0

    # ------------------------------------------------------------------ pause

    def pause(self, queue: str) -> str:
        """Stop handing out jobs (running jobs go on); returns ``"OK"``."""
        return text(self._run("pause", queue_anchor(queue)))

    def resume(self, queue: str) -> int:
        """Hand out jobs again; returns 1 if the queue was paused, else 0."""
        return int(self._run("resume", queue_anchor(queue)))

    def is_paused(self, queue: str) -> bool:
        """Whether the queue is paused (a plain EXISTS, no script)."""
        key = paused_key(queue)
        return bool(self._at(key).command(b"EXISTS", key))

    # ------------------------------------------------------------------ admin

    def retry_failed(self, queue: str, job_id: str, *, now_ms_override: int = 0) -> None:
        """Queue a failed job again with its attempts reset.

        Raises :class:`~omniq_fast.errors.AdminError` with reason ``NO_JOB`` or
        ``NOT_FAILED``.
        """
        anchor = queue_anchor(queue)
        reply = self._run(
            "retry_failed", anchor, check_id("job_id", job_id), self._now(now_ms_override)
        )
        self._admin_status("RETRY_FAILED", reply)

    def retry_failed_batch(
        self, queue: str, job_ids: Sequence[str], *, now_ms_override: int = 0
    ) -> list[BatchResultItem]:
        """:meth:`retry_failed` for up to 100 ids in one call; one result per id."""
        anchor = queue_anchor(queue)
        ids = self._batch_ids(job_ids)
        now = self._now(now_ms_override)
        if not ids:
            return []
        reply = self._run("retry_failed_batch", anchor, now, len(ids), *ids)
        return _parse_batch("RETRY_FAILED_BATCH", reply)

    def remove_job(self, queue: str, job_id: str, lane: str) -> str:
        """Delete a job that is not running from ``lane`` (``wait``, ``delayed``,
        ``failed``, ``completed`` or ``gwait`` for grouped waiting jobs); returns ``"OK"``
        (as the official SDK does).

        Raises :class:`~omniq_fast.errors.AdminError` with reason ``NO_JOB``, ``ACTIVE``,
        ``LANE_MISMATCH`` or ``NOT_IN_LANE``.
        """
        anchor = queue_anchor(queue)
        self._check_lane(lane)
        reply = self._run("remove_job", anchor, check_id("job_id", job_id), lane)
        self._admin_status("REMOVE_JOB", reply)
        return "OK"

    def remove_jobs_batch(
        self, queue: str, lane: str, job_ids: Sequence[str]
    ) -> list[BatchResultItem]:
        """:meth:`remove_job` for up to 100 ids in one call; one result per id."""
        anchor = queue_anchor(queue)
        self._check_lane(lane)
        ids = self._batch_ids(job_ids)
        if not ids:
            return []
        # No trailing now_ms, like the official SDK: the keyspace stays identical.
        reply = self._run("remove_jobs_batch", anchor, lane, len(ids), *ids)
        return _parse_batch("REMOVE_JOBS_BATCH", reply)

    @staticmethod
    def _check_lane(lane: object) -> None:
        if lane not in REMOVE_LANES:
            raise InvalidArgument(f"lane must be one of {sorted(REMOVE_LANES)}, got {lane!r}")

    @staticmethod
    def _batch_ids(job_ids: Iterable[str]) -> list[str]:
        if isinstance(job_ids, (str, bytes)):
            raise InvalidArgument("job_ids must be a list of ids, not a single string")
        ids = list(job_ids)
        if len(ids) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} job_ids per call, got {len(ids)}")
        for job_id in ids:
            if not isinstance(job_id, str):
                raise InvalidArgument(f"job ids must be str, not {type(job_id).__name__}")
        return ids

    @staticmethod
    def _admin_status(op: str, reply: object) -> None:
        if isinstance(reply, list) and reply:
            head = text(reply[0])
            if head == "OK":
                return
            if head == "ERR" and len(reply) >= 2:
                raise AdminError(op, text(reply[1]))
        raise ProtocolError(f"unexpected {op} reply: {reply!r}")

    # ------------------------------------------------------------------ fan-out counters

    def childs_init(self, key: str, expected: int) -> None:
        """Start a completion counter ``key`` expecting ``expected`` children.

        Raises :class:`~omniq_fast.errors.AdminError` (``ALREADY_INIT``) if it exists.
        """
        anchor = counter_anchor(key)
        check_int("expected", expected, 1)
        self._admin_status("CHILDS_INIT", self._run("childs_init", anchor, expected))

    def child_ack(self, key: str, child_id: str) -> int:
        """Count child ``child_id`` as done; returns how many remain.

        The last child gets 0 exactly once; a repeated ack of the same child does not
        count twice. Any server-side error (no counter, already finished) returns -1 and
        never raises, so a retried child cannot trigger the completion twice.
        """
        anchor = counter_anchor(key)
        check_id("child_id", child_id)
        try:
            reply = self._run("child_ack", anchor, child_id)
            if isinstance(reply, list) and len(reply) >= 2 and text(reply[0]) == "OK":
                return int(reply[1])
        except (ScriptError, ProtocolError, ValueError):
            pass
        except redis_py.RedisError:
            pass
        return -1

    # ------------------------------------------------------------------ consumer

    def consume(
        self,
        queue: Union[str, Sequence[str]],
        handler: "Handler",
        *,
        poll_interval_s: float = 0.05,
        promote_interval_s: float = 1.0,
        promote_batch: int = 1000,
        reap_interval_s: float = 1.0,
        reap_batch: int = 1000,
        heartbeat_interval_s: Optional[float] = None,
        verbose: bool = False,
        logger: "LineLogger" = print,
        drain: bool = True,
        stop_on_ctrl_c: bool = True,
        max_jobs: Optional[int] = None,
        concurrency: int = 1,
        prefetch: Optional[int] = None,
        ack_delay_s: float = 0.002,
        wake: bool = True,
        observer: Optional["ConsumerObserver"] = None,
        tracebacks: bool = True,
        burst: bool = False,
    ) -> "ConsumerStats":
        """Consume ``queue`` with ``handler`` until stopped; see :class:`omniq_fast.Consumer`
        for the options and the stop rules.

        ``queue`` may be a list of queues: each gets a consumer of its own with these
        options (``concurrency`` and ``max_jobs`` are per queue), all stopped together;
        see :class:`omniq_fast.MultiConsumer`. The counts returned are summed."""
        from .consumer import Consumer
        from .multiqueue import MultiConsumer

        kind: Any = Consumer if isinstance(queue, str) else MultiConsumer
        return kind(  # type: ignore[no-any-return]
            self, queue, handler, poll_interval_s=poll_interval_s,
            promote_interval_s=promote_interval_s, promote_batch=promote_batch,
            reap_interval_s=reap_interval_s, reap_batch=reap_batch,
            heartbeat_interval_s=heartbeat_interval_s, verbose=verbose, logger=logger,
            drain=drain, stop_on_ctrl_c=stop_on_ctrl_c, max_jobs=max_jobs,
            concurrency=concurrency, prefetch=prefetch, ack_delay_s=ack_delay_s, wake=wake,
            observer=observer,
            tracebacks=tracebacks, burst=burst,
        ).run()  # fmt: skip


class OmniqClient(Client):
    """Drop-in replacement for ``omniq.client.OmniqClient``.

    Same constructor keywords and the same methods with the same keyword names and return
    shapes: switching is a change of one import.
    """

    def __init__(
        self,
        *,
        redis: Optional[redis_py.Redis] = None,
        host: Optional[str] = None,
        port: int = 6379,
        db: int = 0,
        username: Optional[str] = None,
        password: Optional[str] = None,
        ssl: bool = False,
        scripts_dir: Optional[str] = None,
        client_name: Optional[str] = None,
        _core: Optional[ModuleType] = None,
    ) -> None:
        if scripts_dir is not None:
            warnings.warn(
                "omniq-fast runs its own scripts; scripts_dir is ignored",
                RuntimeWarning,
                stacklevel=2,
            )
        if redis is not None:
            super().__init__(redis=redis, _core=_core)
            return
        super().__init__(
            None,
            host=host or "localhost",
            port=port,
            db=db,
            username=username,
            password=password,
            ssl=ssl,
            client_name=client_name,
            _core=_core,
        )
