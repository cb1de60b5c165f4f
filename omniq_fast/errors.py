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
    "ConnectionLost",
    "ClusterUnavailable",
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

    :class:`~omniq_fast._compat.ReplyParser` returns these as values instead of raising
    them, like ``hiredis.Reader``: an error inside a pipelined batch or an array must not
    hide the replies around it. The caller decides which ones to raise.
    """


class ConnectionLost(OmniqError, ConnectionError):
    """The connection failed while a script may have run.

    The script's effect is unknown, so it is not re-sent automatically: re-sending a
    non-idempotent script (enqueue, reserve, ack) could process or queue a job twice.
    For a stream of batches, ``unknown`` holds the tags of the batches in flight.
    """

    def __init__(self, message: str, unknown: Optional[list[Any]] = None) -> None:
        super().__init__(message)
        self.unknown: list[Any] = unknown or []


class ClusterUnavailable(OmniqError, ConnectionError):
    """A Redis Cluster slot stayed unreachable (being migrated, failing over, or its master
    down) for the client's ``cluster_retry_s``. The operation did not run: retry it."""


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
