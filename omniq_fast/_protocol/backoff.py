"""Retry delays with full jitter: how long a failing path waits before its next try.

Pure: it returns delays and never sleeps nor reads a clock, so the blocking and the asyncio
consumers (and their heartbeats and wake listeners) back off by the same rule.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays for retrying a failing call: ``first`` doubling up to ``cap``, each drawn at
    random between half and all of it (so retries of many consumers spread out)."""

    def __init__(self, first: float = 0.01, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    @property
    def failing(self) -> bool:
        return self._next > self.first

    def delay(self) -> float:
        """The next wait, growing each call until :meth:`reset`."""
        current = self._next
        self._next = min(self.cap, current * 2)
        return random.uniform(current / 2, current)

    def reset(self) -> None:
        self._next = self.first
