# The compiled core exports exactly the pure twin's names and signatures (tests/test_parity.py
# checks this at run time), so its stub is the twin: one source of truth for type checkers.
from ._core_py import PushNotification as PushNotification
from ._core_py import ReplyParser as ReplyParser
from ._core_py import dumps_payload as dumps_payload
from ._core_py import encode_command as encode_command
from ._core_py import encode_commands as encode_commands
from ._core_py import encode_args as encode_args
from ._core_py import loads_payload as loads_payload
from ._core_py import new_ulid as new_ulid
from ._core_py import parse_reserve_reply as parse_reserve_reply
from ._core_py import parse_reserve_batch_reply as parse_reserve_batch_reply
from ._core_py import encode_enqueue_batch as encode_enqueue_batch
from ._core_py import encode_lease_batch as encode_lease_batch
from ._core_py import parse_job_results as parse_job_results

__all__ = [
    "encode_command",
    "encode_commands",
    "encode_args",
    "dumps_payload",
    "loads_payload",
    "new_ulid",
    "parse_reserve_reply",
    "parse_reserve_batch_reply",
    "encode_enqueue_batch",
    "encode_lease_batch",
    "parse_job_results",
    "PushNotification",
    "ReplyParser",
]
