"""What the consumers (blocking and asyncio) say about a job: verbose lines and observer calls.

Shared by both shells, so a verbose line or an observer event reads the same whichever
consumer ran the job.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from ._protocol.effects import Report
from ._context import JobCtx
from .observe import ObserverGuard

__all__ = ["SHOWN_PAYLOAD_CHARS", "is_async_handler", "received_line", "report"]

#: Verbose lines show this many characters of a payload, then its size.
SHOWN_PAYLOAD_CHARS = 200


def is_async_handler(handler: Any) -> bool:
    """Whether ``handler`` is an ``async def`` function (or an object whose ``__call__`` is)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)
    )


def received_line(ctx: JobCtx) -> str:
    """The verbose line of a job whose handler is about to run."""
    # Non-ASCII text as is, like the official SDK's line (not "\u00e9").
    shown = (
        ctx.payload if isinstance(ctx.payload, str) else json.dumps(ctx.payload, ensure_ascii=False)
    )
    if len(shown) > SHOWN_PAYLOAD_CHARS:
        size = len(ctx.payload_raw.encode())
        shown = f"{shown[:SHOWN_PAYLOAD_CHARS]}… ({size} bytes)"
    return f"received job_id={ctx.job_id} attempt={ctx.attempt} gid={ctx.gid or '-'} payload={shown}"


def report(observer: ObserverGuard, effect: Report) -> None:
    """Tell ``observer`` what the dispatcher's :class:`Report` says."""
    if effect.kind == "handled":
        observer.handled(effect.ctx, effect.arg)
    elif effect.kind == "finished":
        observer.finished(effect.ctx, effect.arg)
    elif effect.kind == "fail":
        observer.fail_outcome(effect.ctx, effect.arg)
    else:
        observer.unknown_outcome(effect.ctx, effect.arg)
