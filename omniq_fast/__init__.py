"""omniq-fast: a fast, wire-exact Python client for the OmniQ v1 job queue.

``Client`` is the Pythonic entry point; ``OmniqClient`` is a drop-in for the official
``omniq.client.OmniqClient``. ``IMPLEMENTATION`` says which hot path loaded: ``"cython"``
(the compiled core) or ``"python"`` (the pure twin, forced by ``OMNIQ_FAST_NO_EXTENSIONS=1``).
"""

from ._compat import IMPLEMENTATION
from ._version import __version__
from .bulk import PublishManyError
from .client import Client, OmniqClient, now_ms
from .consumer import CheckCompletion, Consumer, ConsumerStats, Exec, JobCtx, consume
from .monitor import QueueMonitor
from .multiqueue import MultiConsumer
from .errors import (
    AdminError,
    ClusterUnavailable,
    ConnectionLost,
    InvalidArgument,
    InvalidOptionType,
    InvalidKey,
    InvalidPayload,
    InvalidPayloadValue,
    InvalidQueueName,
    LeaseError,
    NotActive,
    OmniqError,
    ProtocolError,
    ReplyError,
    ScriptError,
    TokenMismatch,
    TokenRequired,
)
from .types import (
    AckFailResult,
    BatchResultItem,
    Job,
    JobResult,
    Paused,
    ReservedJob,
    ReserveJob,
    ReservePaused,
    ReserveResult,
)

__all__ = [
    "IMPLEMENTATION",
    "__version__",
    "Client",
    "OmniqClient",
    "now_ms",
    "consume",
    "Consumer",
    "MultiConsumer",
    "ConsumerStats",
    "JobCtx",
    "Exec",
    "CheckCompletion",
    "QueueMonitor",
    "OmniqError",
    "InvalidQueueName",
    "InvalidKey",
    "InvalidPayload",
    "InvalidPayloadValue",
    "InvalidArgument",
    "InvalidOptionType",
    "ScriptError",
    "LeaseError",
    "TokenRequired",
    "TokenMismatch",
    "NotActive",
    "AdminError",
    "ProtocolError",
    "ReplyError",
    "ClusterUnavailable",
    "ConnectionLost",
    "ReservedJob",
    "ReserveJob",
    "Paused",
    "ReservePaused",
    "ReserveResult",
    "BatchResultItem",
    "AckFailResult",
    "Job",
    "JobResult",
    "PublishManyError",
]

