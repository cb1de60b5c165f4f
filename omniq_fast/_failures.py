"""The error text a failed job keeps: the official ``"<Type>: <message>"`` line, optionally
followed by the handler's traceback.

The first line is exactly what the official SDKs store (PROTOCOL.md §6), so their tools
still show something useful; the traceback comes after it. ``ack_fail`` keeps only the
first :data:`MAX_FAILURE_BYTES` bytes of an error (PROTOCOL.md §5), so a long text is cut
here instead, where the cut can keep the innermost frames (the end of a traceback says
where it failed) and land on a character boundary.
"""

from __future__ import annotations

import os
import traceback as traceback_module
from types import TracebackType
from typing import Optional

__all__ = ["MAX_FAILURE_BYTES", "failure_text"]

#: What ``ack_fail`` stores of an error, in UTF-8 bytes.
MAX_FAILURE_BYTES = 4096
#: Most of the budget the first line may take, so that some traceback always fits.
_HEAD_MAX_BYTES = 1024
_CUT = "\n… (traceback cut: its start is left out to fit) …\n"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _from_caller(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """``tb`` without its leading frames in omniq-fast itself (the consumer calling the
    handler): the traceback starts in the user's code. Later frames of ours (an API the
    handler called) stay."""
    while tb is not None and tb.tb_next is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            break
        tb = tb.tb_next
    return tb


def _head(text: str, limit: int) -> str:
    """The first ``limit`` UTF-8 bytes of ``text``, cut on a character boundary."""
    return text.encode()[:limit].decode(errors="ignore")


def _tail(text: str, limit: int) -> str:
    """The last ``limit`` UTF-8 bytes of ``text``, cut on a character boundary."""
    data = text.encode()
    return data[len(data) - limit :].decode(errors="ignore") if len(data) > limit else text


def failure_text(exc: BaseException, *, traceback: bool = True) -> str:
    """``"<Type>: <message>"`` for ``exc``; with ``traceback``, that line, a newline and
    the formatted traceback from the first frame outside omniq-fast, at most :data:`MAX_FAILURE_BYTES` bytes in all (the start
    of a longer traceback is cut, and says so)."""
    head = f"{type(exc).__name__}: {exc}"
    if not traceback:
        return head  # the official form, byte for byte (the server cuts it if needed)
    head = _head(head, _HEAD_MAX_BYTES)
    tb = _from_caller(exc.__traceback__)
    body = "".join(traceback_module.format_exception(type(exc), exc, tb))
    text = f"{head}\n{body.rstrip()}"
    if len(text.encode()) <= MAX_FAILURE_BYTES:
        return text
    # Too long: the frames nearest the error, without the closing "Type: message" lines
    # (the first line already says it, and a long message would crowd the frames out).
    closing = "".join(traceback_module.format_exception_only(type(exc), exc))
    if body.endswith(closing):
        body = body[: -len(closing)]
    room = MAX_FAILURE_BYTES - len(head.encode()) - len(_CUT.encode())
    return f"{head}{_CUT}{_tail(body.rstrip(), room)}"
