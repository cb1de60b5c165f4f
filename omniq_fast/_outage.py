"""How the consumer's threads live through a server that is down, loading or busy.

* :class:`Backoff` (pure, from :mod:`omniq_fast._protocol.backoff`): exponential delays with full jitter, 10 ms doubling up to 2 s, so a
  consumer that waits out an outage costs no CPU and a fleet of them does not retry in step.
* :class:`Outage`: one WARNING when a path starts failing (with the cause), then one line
  at most every ``repeat_s``, and one INFO line when it works again.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from ._protocol.backoff import Backoff

__all__ = ["Backoff", "Outage"]


class Outage:
    """Logs one outage of ``what`` once, then every ``repeat_s`` at most, then its end."""

    def __init__(self, logger: logging.Logger, what: str, repeat_s: float = 30.0) -> None:
        self._log = logger
        self._what = what
        self._repeat_s = repeat_s
        self._since: Optional[float] = None
        self._last_line = 0.0
        self._failures = 0

    def failed(self, cause: object) -> None:
        now = time.monotonic()
        self._failures += 1
        if self._since is None:
            self._since = self._last_line = now
            self._log.warning("%s failing (%s); retrying with backoff", self._what, _cause(cause))
        elif now - self._last_line >= self._repeat_s:
            self._last_line = now
            self._log.warning(
                "%s still failing after %.0f s and %d tries (%s)",
                self._what, now - self._since, self._failures, _cause(cause),
            )  # fmt: skip

    def recovered(self) -> None:
        if self._since is None:
            return
        self._log.info(
            "%s works again after %.1f s (%d failed tries)",
            self._what, time.monotonic() - self._since, self._failures,
        )  # fmt: skip
        self._since = None
        self._failures = 0


def _cause(exc: object) -> str:
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
