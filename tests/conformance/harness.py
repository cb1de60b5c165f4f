"""Drive omniq-fast and the official SDK through the same calls and compare everything.

``Pair.call(op, **kwargs)`` runs the same keyword call on both clients (each on its own
database, same queue names), checks that the results (or raised errors) correspond, and
``Pair.assert_same_keyspace()`` compares every key under the pair's prefixes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import redis

from support import snapshot


def normalise(value: Any) -> Any:
    """A comparable form of a client result: dataclasses by their fields, errors by kind."""
    if isinstance(value, BaseException):
        # Messages of script errors are the same text ("ACK_FAIL failed: NOT_ACTIVE");
        # validation messages are ours to word, so only their kind must match.
        for kind in (RuntimeError, TypeError, ValueError):
            if isinstance(value, kind):
                text = str(value) if kind is RuntimeError else ""
                return ("raised", kind.__name__, text)
        return ("raised", type(value).__name__, str(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: normalise(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return type(value)(normalise(v) for v in value)
    return value


def _stats_equal(a: dict[bytes, bytes], b: dict[bytes, bytes]) -> bool:
    """Stats hashes must match, except that remove_job stamps ``last_activity_ms`` from the
    server clock in whole seconds: two such stamps may straddle a second boundary."""
    if a.keys() != b.keys():
        return False
    for field, left in a.items():
        right = b[field]
        if left == right:
            continue
        if field != b"last_activity_ms" or not (left.endswith(b"000") and right.endswith(b"000")):
            return False
        if abs(int(left) - int(right)) > 1000:
            return False
    return True


class Pair:
    """omniq-fast (``ours``, on ``r``) and the official client (``theirs``, on ``r2``)."""

    def __init__(self, ours: Any, theirs: Any, r: redis.Redis, r2: redis.Redis, *prefixes: str):
        self.ours, self.theirs = ours, theirs
        self.r, self.r2 = r, r2
        self.prefixes = prefixes
        self.log: list[str] = []

    def call(self, op: str, **kwargs: Any) -> Any:
        """Run ``op(**kwargs)`` on both; returns our result (or raised error)."""
        self.log.append(f"{op}({kwargs})")
        results = []
        for client in (self.ours, self.theirs):
            try:
                results.append(getattr(client, op)(**kwargs))
            except Exception as exc:  # compared below, like a result
                results.append(exc)
        ours, theirs = results
        assert normalise(ours) == normalise(theirs), (
            f"{op} answered differently\n ours:   {ours!r}\n theirs: {theirs!r}\n"
            + "\n".join(self.log)
        )
        return ours

    def assert_same_keyspace(self) -> None:
        left = snapshot(self.r, *self.prefixes)
        right = snapshot(self.r2, *self.prefixes)
        problems = []
        for key in sorted(left.keys() | right.keys()):
            a, b = left.get(key), right.get(key)
            if a == b:
                continue
            if a and b and key.endswith(b":stats") and a[0] == b[0] == "hash":
                if _stats_equal(a[1], b[1]):
                    continue
            problems.append(f"{key!r}\n   ours:   {a}\n   theirs: {b}")
        assert not problems, "keyspaces differ after:\n" + "\n".join(self.log) + "\n" + "\n".join(
            problems
        )

    def cleanup(self) -> None:
        from support import delete_prefixed

        delete_prefixed(self.r, *self.prefixes)
        delete_prefixed(self.r2, *self.prefixes)
