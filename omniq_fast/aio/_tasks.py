"""Ending background tasks for sure."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

__all__ = ["cancel_and_wait", "uncancel_current"]


async def cancel_and_wait(tasks: Sequence["asyncio.Future[Any]"]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again those still running.

    A cancel that lands while a timeout inside the awaited call expires is swallowed by
    it: redis-py's ``get_message(timeout=...)`` and its reads under ``socket_timeout`` then
    return or raise a timeout, and a loop around them goes on as if never cancelled. So
    one ``cancel()`` and an ``await`` can hang a shutdown (seen once in ten stops).
    """
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.1)
        for task in pending:
            task.cancel()
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a helper's error was logged where it happened


def uncancel_current() -> None:
    """Forget the cancellation the current task consumed (a hard exit returns instead of
    raising), so its later awaits (``asyncio.timeout`` and such) are not taken for
    cancelled ones."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is not None:
        uncancel()
