"""What a handler receives: :class:`JobCtx` with its ``exec`` helpers and the Go client's
``check_completion``; and the consumer's :class:`ConsumerStats`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, Protocol, TypeVar

if TYPE_CHECKING:
    from typing_extensions import TypeVar as DefaultingTypeVar

__all__ = ["JobCtx", "Exec", "CheckCompletion", "ConsumerStats"]

log = logging.getLogger("omniq_fast.consumer")


class ExecTarget(Protocol):
    """The client calls :class:`Exec` makes: what :class:`~omniq_fast.Client` has. Typed
    by shape so that this module imports no shell (the client imports it, not the other way
    round)."""

    # A property, so that a publish with its own keyword options (any of them) fits.
    @property
    def publish(self) -> Callable[..., str]: ...

    def pause(self, queue: str) -> str: ...
    def resume(self, queue: str) -> int: ...
    def is_paused(self, queue: str) -> bool: ...
    def childs_init(self, key: str, expected: int) -> None: ...
    def child_ack(self, key: str, child_id: str) -> int: ...


class Exec:
    """What a handler may do with the client (``ctx.exec``), as in the official SDK."""

    __slots__ = ("_client", "default_child_id")

    def __init__(self, client: ExecTarget, default_child_id: str) -> None:
        self._client = client
        self.default_child_id = default_child_id

    def publish(self, *, queue: str, payload: Any, **options: Any) -> str:
        """Publish a job (same options as :meth:`Client.publish`); returns its id."""
        return self._client.publish(queue, payload, **options)

    def pause(self, *, queue: str) -> str:
        """Pause ``queue``."""
        return self._client.pause(queue)

    def resume(self, *, queue: str) -> int:
        """Resume ``queue``."""
        return self._client.resume(queue)

    def is_paused(self, *, queue: str) -> bool:
        """Whether ``queue`` is paused."""
        return self._client.is_paused(queue)

    def childs_init(self, key: str, expected: int) -> None:
        """Start a completion counter (see :meth:`Client.childs_init`)."""
        self._client.childs_init(key, expected)

    def child_ack(self, key: str, child_id: Optional[str] = None) -> int:
        """Count this job (or ``child_id``) as a finished child; returns how many remain."""
        return self._client.child_ack(key, child_id or self.default_child_id)

    def _completion(self) -> "CheckCompletion":
        """The ``ctx.check_completion`` that goes with these helpers."""
        return CheckCompletion(self)


class CheckCompletion:
    """Fan-out completion with the Go client's names (``ctx.check_completion``)."""

    __slots__ = ("_exec",)

    def __init__(self, exec_: Exec) -> None:
        self._exec = exec_

    def init_job_counter(self, key: str, expected: int) -> None:
        """Parent: expect ``expected`` children under ``key``."""
        self._exec.childs_init(key, expected)

    def job_decrement(self, key: str, child_id: Optional[str] = None) -> int:
        """Child: count this job as done. Returns the remaining count, 0 exactly once (for
        the last child), and -1 on any error — it never raises."""
        try:
            return self._exec.child_ack(key, child_id)
        except Exception:  # the contract: -1, never an exception in a child's handler
            log.debug("job_decrement(%r) failed", key, exc_info=True)
            return -1


if TYPE_CHECKING:  # type-parameter defaults (PEP 696) are for the checker only before 3.13
    ExecT = DefaultingTypeVar("ExecT", default=Exec)
    CompletionT = DefaultingTypeVar("CompletionT", default=CheckCompletion)
else:
    ExecT = TypeVar("ExecT")
    CompletionT = TypeVar("CompletionT")


@dataclass(eq=False)
class JobCtx(Generic[ExecT, CompletionT]):
    """What a handler receives: the job, its lease, and helpers (``exec``).

    ``payload`` is the parsed JSON (the raw text when it is not JSON). ``lease_lost`` turns
    true if a heartbeat found that the lease was taken away (reaped, or re-reserved by
    another consumer), or if the ack was refused for that reason; either way this consumer
    has not acked the job.

    Plain ``JobCtx`` is a blocking consumer's (``exec`` an :class:`Exec`); an
    :class:`~omniq_fast.AsyncConsumer`'s handlers get an ``AsyncJobCtx`` (from
    ``omniq_fast.aio``): ``JobCtx[AsyncExec, AsyncCheckCompletion]``, whose helpers are
    coroutines.
    """

    queue: str
    job_id: str
    payload_raw: str
    payload: Any
    attempt: int
    max_attempts: int
    lock_until_ms: int
    lease_token: str
    exec: ExecT
    gid: str = ""
    lease_lost: bool = False
    check_completion: CompletionT = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Each shell's exec makes the check_completion its handlers can call (an AsyncExec
        # an awaited one); anything else given as exec (a stand-in) gets the blocking one.
        exec_: Any = self.exec
        make = getattr(exec_, "_completion", None)
        completion: Any = make() if make is not None else CheckCompletion(exec_)
        self.check_completion = completion


@dataclass
class ConsumerStats:
    """Counts of what a consumer did, returned by :meth:`Consumer.run`."""

    handled: int = 0
    succeeded: int = 0
    failed: int = 0
    lease_lost: int = 0
    #: Acks sent again after a lost connection and refused: the first one most likely
    #: landed (or the lease ran out meanwhile); counted in neither ``succeeded`` nor
    #: ``failed``.
    ack_unknown: int = 0
