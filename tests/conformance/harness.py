"""Drive omniq-fast and the official SDK through the same calls and compare everything.

``Pair.call(op, **kwargs)`` runs the same keyword call on both clients (each on its own
database, same queue names), checks that the results (or raised errors) correspond, and
``Pair.assert_same_keyspace()`` compares every key under the pair's prefixes.

Also the helpers the conformance modules share: ``call_official`` and ``plain_official``
(an official call's outcome as a value, and as plain data), ``decoded`` (a raw script reply
as the official client's decoding connection sees it), ``payload_json`` (a payload as
published) and ``assert_same_snapshots`` (two keyspace snapshots, with a readable diff).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import redis

from support import snapshot


def call_official(official: Callable[[], Any]) -> Any:
    """What an official call returned, or the RuntimeError it raised.

    Anything else it raises becomes an AssertionError carrying only the type and message: a
    traceback through the official package would print its (GPL) source lines.
    """
    try:
        return official()
    except RuntimeError as exc:
        return exc
    except Exception as exc:
        failure = f"official call raised {type(exc).__name__}: {exc}"
    raise AssertionError(failure)


def plain_official(result: Any) -> Any:
    """An official result as plain data (result objects by their fields, errors as text)."""
    if isinstance(result, RuntimeError):
        return ("raised", str(result))
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return tuple(getattr(result, f.name) for f in dataclasses.fields(result))
    return result


def decoded(value: Any) -> Any:
    """Our raw reply in the shape the official client's connection (decode_responses) sees."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [decoded(v) for v in value]
    return value


def payload_json(payload: Any) -> str:
    """A payload as the publish ARGV carries it: compact JSON, non-ASCII characters unescaped."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def assert_same_snapshots(ours: dict[bytes, Any], theirs: dict[bytes, Any]) -> None:
    """Two keyspace snapshots (``support.snapshot``) must be equal; the error names only
    the keys that differ, with both sides' values."""
    if ours != theirs:
        diff = {
            k: (ours.get(k), theirs.get(k))
            for k in sorted(set(ours) | set(theirs))
            if ours.get(k) != theirs.get(k)
        }
        raise AssertionError(f"keyspaces differ (ours, oracle): {diff}")


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
