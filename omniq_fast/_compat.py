"""Chooses the compiled core or its pure-Python twin; everything else imports from here.

``OMNIQ_FAST_NO_EXTENSIONS=1`` (any non-empty value) forces the pure twin, and so does a
non-CPython interpreter or a missing/broken extension (logged at DEBUG).
"""

from __future__ import annotations

import logging
import os
import platform
from typing import TYPE_CHECKING

NO_EXTENSIONS = bool(os.environ.get("OMNIQ_FAST_NO_EXTENSIONS"))
USE_EXTENSIONS = not NO_EXTENSIONS and platform.python_implementation() == "CPython"

IMPLEMENTATION = "python"

if USE_EXTENSIONS and not TYPE_CHECKING:
    try:
        from ._core import (  # noqa: F401
            dumps_payload,
            encode_command,
            encode_commands,
            encode_args,
            loads_payload,
            new_ulid,
            parse_reserve_reply,
            parse_reserve_batch_reply,
            encode_enqueue_batch,
            encode_lease_batch,
            parse_job_results,
            PushNotification,
            ReplyParser,
        )

        IMPLEMENTATION = "cython"
    except ImportError as exc:  # pragma: no cover - depends on the build
        logging.getLogger("omniq_fast").debug("compiled core unavailable: %s", exc)
        USE_EXTENSIONS = False

if TYPE_CHECKING or not USE_EXTENSIONS:
    from ._core_py import (  # noqa: F401
        dumps_payload,
        encode_command,
        encode_commands,
        encode_args,
        loads_payload,
        new_ulid,
        parse_reserve_reply,
        parse_reserve_batch_reply,
        encode_enqueue_batch,
        encode_lease_batch,
        parse_job_results,
        PushNotification,
        ReplyParser,
    )
