"""Exceptions raised by omniq-fast.

Every error derives from :class:`OmniqError` and from the builtin that fits it, so code
written against the official SDK (which raises plain ``RuntimeError``/``ValueError``/
``TypeError``) keeps catching them after switching. Errors that come from a script carry the
protocol reason code in ``.reason``.
"""

from __future__ import annotations

from typing import Any, Optional

from redis.exceptions import RedisError, ResponseError

__all__ = [
    "OmniqError",
    "PublishManyError",
    "DuplicateJobs",
    "InvalidQueueName",
    "InvalidKey",
    "InvalidPayload",
    "InvalidPayloadValue",
    "InvalidArgument",
    "ScriptError",
    "LeaseError",
    "TokenRequired",
    "TokenMismatch",
    "NotActive",
    "AdminError",
    "ProtocolError",
    "ReplyError",
    "ServerRefused",
    "OutOfMemory",
    "ServerBusy",
    "ServerLoading",
    "NoScript",
    "ReadOnlyReplica",
    "MasterDown",
    "TryAgain",
    "ClusterDown",
    "Redirected",
    "NoReplicas",
    "WritesDisabled",
    "DuplicateJob",
    "AuthenticationFailed",
    "ServerTimeout",
    "ServerUnreachable",
    "reply_error",
    "did_not_run",
    "ConnectionLost",
    "ClusterUnavailable",
    "MissingExtra",
    "lease_error",
    "InvalidOptionType",
]


class OmniqError(Exception):
    """Base class of every omniq-fast error."""


class InvalidQueueName(OmniqError, ValueError):
    """A queue name outside ``[A-Za-z0-9._-]{1,128}`` (rejected before any Redis call)."""


class InvalidKey(OmniqError, ValueError):
    """A completion-counter key that is empty, too long or contains braces."""


class InvalidPayload(OmniqError, TypeError):
    """A payload that is not structured JSON (object or array) or cannot be encoded as JSON.

    Raised for strings, numbers, ``None``, bytes, NaN/Infinity and non-string object keys.
    NaN/Infinity raise this too (it is a ``TypeError``, and also a ``ValueError`` through
    :class:`InvalidPayloadValue`) so either ``except`` catches it.
    """


class InvalidPayloadValue(InvalidPayload, ValueError):
    """A payload value JSON cannot represent (NaN, Infinity)."""


class InvalidArgument(OmniqError, ValueError):
    """An option out of range (negative limit, oversized batch, unknown lane...)."""


class ScriptError(OmniqError, RuntimeError):
    """A script answered with an error reason.

    ``reason`` is the protocol reason code (``NO_JOB``, ``TOKEN_MISMATCH``...), ``op`` the
    operation that failed. The message reads like the official SDK's
    (``"ACK_SUCCESS failed: TOKEN_MISMATCH"``).
    """

    def __init__(self, op: str, reason: str) -> None:
        self.op = op
        self.reason = reason
        super().__init__(f"{op} failed: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.op, self.reason))


class LeaseError(ScriptError):
    """The lease of a reserved job is not held by this caller (heartbeat/ack refused)."""


class TokenRequired(LeaseError):
    """An empty lease token was sent (``TOKEN_REQUIRED``)."""


class TokenMismatch(LeaseError):
    """The job's lease belongs to another reservation (``TOKEN_MISMATCH``)."""


class NotActive(LeaseError):
    """The job is no longer active: acked, reaped or removed (``NOT_ACTIVE``)."""


class AdminError(ScriptError):
    """An admin operation (retry, remove, counters) was refused; see ``reason``."""


class ProtocolError(OmniqError, RuntimeError):
    """The server sent a reply this client does not understand."""


class ReplyError(OmniqError, ResponseError):
    """An error reply (``-ERR ...``) from the server, message as sent.

    It is a redis-py ``ResponseError`` too, which is what the official SDK lets through for
    server-side errors, so handlers written for it keep catching these.

    ``code`` is the reply's first word (``ERR``, ``OOM``, ``BUSY``...). ``ran`` says what the
    reply proves about the command: ``False`` when the server refused it before it changed
    anything (the subclasses of :class:`ServerRefused`), ``None`` when it cannot tell (a
    script that failed part-way may have written some keys: Redis does not roll back).

    :class:`~omniq_fast._compat.ReplyParser` returns these as values instead of raising
    them, like ``hiredis.Reader``: an error inside a pipelined batch or an array must not
    hide the replies around it. The caller decides which ones to raise. The parser builds
    them with :func:`reply_error`, which picks the subclass from the code.
    """

    ran: Optional[bool] = None

    @property
    def code(self) -> str:
        """The error code: the first word of the server's message."""
        message = str(self)
        return message.split(" ", 1)[0] if message else ""


class ServerRefused(ReplyError):
    """The server refused the command before running it: nothing changed, and sending it
    again later is safe (``ran`` is ``False``)."""

    ran: Optional[bool] = False


class OutOfMemory(ServerRefused):
    """``OOM``: the server is at ``maxmemory`` (policy ``noeviction``) and refuses writes.
    A script is refused at its first write, before it changed anything."""


class ServerBusy(ServerRefused):
    """``BUSY``: another client's script (or function) is running past the busy timeout."""


class ServerLoading(ServerRefused):
    """``LOADING``: the server is loading its dataset after a restart."""


class NoScript(ServerRefused):
    """``NOSCRIPT``: the script is not loaded (first use, SCRIPT FLUSH, restart). The client
    loads it and re-sends; this reaches the caller only if flushes keep winning the race."""


class ReadOnlyReplica(ServerRefused):
    """``READONLY``: the node is a replica (a failover demoted it); writes are refused."""


class MasterDown(ServerRefused):
    """``MASTERDOWN``: a replica lost its master and serves no stale data."""


class TryAgain(ServerRefused):
    """``TRYAGAIN``: a cluster slot is being migrated; the command did not run."""


class ClusterDown(ServerRefused):
    """``CLUSTERDOWN``: the cluster cannot serve the slot now; the command did not run."""


class Redirected(ServerRefused):
    """``MOVED``/``ASK``: the slot lives on another node; the command did not run here."""


class NoReplicas(ServerRefused):
    """``NOREPLICAS``: ``min-replicas-to-write`` is not met; writes are refused."""


class WritesDisabled(ServerRefused):
    """``MISCONF``: the server stopped accepting writes after a failed snapshot."""


_REFUSALS: dict[str, type[ServerRefused]] = {
    "OOM": OutOfMemory,
    "BUSY": ServerBusy,
    "LOADING": ServerLoading,
    "NOSCRIPT": NoScript,
    "READONLY": ReadOnlyReplica,
    "MASTERDOWN": MasterDown,
    "TRYAGAIN": TryAgain,
    "CLUSTERDOWN": ClusterDown,
    "MOVED": Redirected,
    "ASK": Redirected,
    "NOREPLICAS": NoReplicas,
    "MISCONF": WritesDisabled,
}


def reply_error(message: str) -> ReplyError:
    """The typed error for a server error reply's text (without the leading ``-``)."""
    cls = _REFUSALS.get(message.split(" ", 1)[0])
    return ReplyError(message) if cls is None else cls(message)


def did_not_run(reply: object) -> bool:
    """Whether ``reply`` proves its command changed nothing: an error reply of a
    :class:`ServerRefused` kind (or a redis-py error of one of those codes), or
    :class:`ClusterUnavailable`. Such a call (an ack, a batch of enqueues) may be sent
    again; any other reply may not prove it."""
    if isinstance(reply, (ReplyError, ClusterUnavailable)):
        return reply.ran is False
    if isinstance(reply, ResponseError):
        return str(reply).split(" ", 1)[0] in _REFUSALS
    return False


class DuplicateJob(OmniqError, ValueError):
    """``publish`` of a ``job_id`` whose job already exists in the queue (any state): the
    job was not written again (reason ``DUPLICATE``). The official SDK overwrites it."""

    reason = "DUPLICATE"

    def __init__(self, queue: str, job_id: str) -> None:
        self.queue = queue
        self.job_id = job_id
        super().__init__(f"job {job_id!r} already exists in queue {queue!r}; not published again")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.queue, self.job_id))


class AuthenticationFailed(OmniqError, PermissionError):
    """The server refused the credentials (wrong password or ACL user). Nothing was sent."""


class ConnectionLost(OmniqError, ConnectionError):
    """The connection failed while a script may have run.

    The script's effect is unknown, so it is not re-sent automatically: re-sending a
    non-idempotent script (enqueue, reserve, ack) could process or queue a job twice.
    For a stream of batches, ``unknown`` holds the tags of the batches in flight.
    """

    def __init__(self, message: str, unknown: Optional[list[Any]] = None) -> None:
        super().__init__(message)
        self.unknown: list[Any] = unknown or []


class ServerTimeout(ConnectionLost, TimeoutError):
    """No reply within the socket timeout after the command was sent: the server may be
    frozen or overloaded, and the command may have run. Not re-sent automatically."""


class ServerUnreachable(OmniqError, ConnectionError):
    """Connecting to the server failed (refused, timed out, DNS): nothing was sent."""


class ClusterUnavailable(OmniqError, ConnectionError):
    """A Redis Cluster slot stayed unreachable (being migrated, failing over, or its master
    down) for the client's ``cluster_retry_s``. The operation did not run: retry it."""

    ran: Optional[bool] = False


class MissingExtra(OmniqError, ImportError):
    """An optional feature was used without its extra installed (``omniq-fast[metrics]``,
    ``omniq-fast[tracing]``); the message names the ``pip install`` that fixes it."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} need the {extra!r} extra: pip install 'omniq-fast[{extra}]'")
        self.extra = extra


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


#: Errors after which a consumer backs off and goes on: the connection, not the request,
#: was at fault (redis-py's own errors included, OSError for the socket underneath).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionLost, RedisError, OSError)

_LEASE_ERRORS: dict[str, type[LeaseError]] = {
    "TOKEN_REQUIRED": TokenRequired,
    "TOKEN_MISMATCH": TokenMismatch,
    "NOT_ACTIVE": NotActive,
}


def lease_error(op: str, reason: str) -> ScriptError:
    """The typed error for a reason answered by heartbeat/ack scripts."""
    cls = _LEASE_ERRORS.get(reason)
    if cls is None:
        return ScriptError(op, reason)
    return cls(op, reason)


class InvalidOptionType(InvalidArgument, TypeError):
    """An option of the wrong type (``handler=None``, ``concurrency="4"``, ``verbose=1``):
    a ``TypeError`` as well as an :class:`InvalidArgument`, raised before anything is sent."""
