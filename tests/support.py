"""Helpers shared by the tests: keyspace snapshots and direct script calls."""

from __future__ import annotations

from typing import Any

import redis

from omniq_fast.scripts import script


def snapshot(r: redis.Redis, *prefixes: str) -> dict[bytes, Any]:
    """Every key starting with one of ``prefixes``: its type, full value and TTL.

    Values are normalised so two snapshots compare with ``==``: zsets keep their order and
    scores, sets are sorted, TTLs are -1 (none) or "has one".
    """
    out: dict[bytes, Any] = {}
    for prefix in prefixes:
        for key in r.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            kind = r.type(key).decode()
            if kind == "string":
                value: Any = r.get(key)
            elif kind == "hash":
                value = r.hgetall(key)
            elif kind == "list":
                value = r.lrange(key, 0, -1)
            elif kind == "set":
                value = sorted(r.smembers(key))
            elif kind == "zset":
                value = r.zrange(key, 0, -1, withscores=True)
            else:  # pragma: no cover - we never write other types
                value = kind
            ttl = r.ttl(key)
            out[key] = (kind, value, ttl if ttl < 0 else "ttl")
    return out


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def delete_prefixed(r: redis.Redis, *prefixes: str) -> None:
    for prefix in prefixes:
        keys = list(r.scan_iter(match=_glob_escape(prefix) + "*", count=1000))
        if keys:
            r.delete(*keys)


def run_script(r: redis.Redis, name: str, anchor: str, *argv: Any) -> Any:
    """Run our script ``name`` with EVAL (bypassing the client) and return the raw reply."""
    return r.eval(script(name).source, 1, anchor, *argv)
