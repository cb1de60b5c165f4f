"""What to do when the server answers NOSCRIPT (its script cache was flushed, or it
restarted): such a reply means the call did nothing, so its script is loaded and the call
sent again, a bounded number of times. Both shells follow this one plan.

The wake messages that rode along with the calls (``PUBLISH {Q}:wake``) went out when the
calls had not run, so they woke consumers to an empty queue: they are sent again after the
re-run calls, else a consumer without key tracking would wait for its poll.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Optional, Sequence

from ..errors import ReplyError
from .._scripts import Script

__all__ = ["MAX_NOSCRIPT_RETRIES", "is_noscript", "Resend", "resend"]

#: How many times a call answered NOSCRIPT is loaded and re-sent before the NOSCRIPT reply
#: reaches the caller: a SCRIPT FLUSH can land between the load and the re-run, but a loop
#: of flushes must not keep a call going for ever.
MAX_NOSCRIPT_RETRIES = 5


def is_noscript(reply: object) -> bool:
    """Whether ``reply`` is the server's NOSCRIPT error."""
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


class Resend:
    """One re-send: the SCRIPT LOADs then the calls that answered NOSCRIPT, in one write
    (``data``, ``count`` replies); :meth:`merge` puts their new replies in place."""

    __slots__ = ("data", "count", "_missing", "_loads")

    def __init__(self, data: bytes, count: int, missing: list[int], loads: int) -> None:
        self.data = data
        self.count = count
        self._missing = missing
        self._loads = loads

    def merge(self, replies: list[Any], again: list[Any]) -> None:
        """The re-sent calls' replies into ``replies``; a refused load raises its error."""
        for loaded in again[: self._loads]:
            if isinstance(loaded, ReplyError):
                raise loaded
        ran = again[self._loads : self._loads + len(self._missing)]  # then the wakes' replies
        for i, reply in zip(self._missing, ran):
            replies[i] = reply


def resend(
    core: ModuleType,
    calls: Sequence[tuple[Script, bytes]],
    replies: list[Any],
    wakes: Sequence[bytes] = (),
) -> Optional[Resend]:
    """The re-send the replies call for (the first ``len(calls)`` are the calls'), or None
    when no call answered NOSCRIPT; ``wakes`` (the encoded wake messages sent with the
    calls; they change no state) go again after the re-sent calls."""
    missing = [i for i, reply in enumerate(replies[: len(calls)]) if is_noscript(reply)]
    if not missing:
        return None
    scripts = {calls[i][0].name: calls[i][0] for i in missing}
    load = b"".join(core.encode_command((b"SCRIPT", b"LOAD", s.source)) for s in scripts.values())
    data = load + b"".join(calls[i][1] for i in missing) + b"".join(wakes)
    return Resend(data, len(scripts) + len(missing) + len(wakes), missing, len(scripts))
