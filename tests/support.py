"""Helpers shared by the tests: keyspace snapshots, direct script calls, bounded waits and
reading jobs back from Redis."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import redis

from omniq_fast._scripts import script


def connect(url: str, **options: Any) -> Any:
    """A redis-py client for ``url``: a ``RedisCluster`` when the server is a cluster node
    (the tests under tests/cluster re-run modules written for one server)."""
    probe = redis.Redis.from_url(url)
    try:
        clustered = bool(probe.info("cluster").get("cluster_enabled"))
    finally:
        probe.close()
    if clustered:
        return redis.RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def snapshot(r: redis.Redis, *prefixes: str) -> dict[bytes, Any]:
    """Every key starting with one of ``prefixes``: its type, full value and TTL.

    Values are normalised so two snapshots compare with ``==``: zsets keep their order and
    scores, sets are sorted, TTLs are -1 (none) or "has one". Three round trips in all.
    """
    keys: list[bytes] = []
    for prefix in prefixes:
        keys.extend(r.scan_iter(match=_glob_escape(prefix) + "*", count=1000))
    keys = sorted(set(keys))
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        pipe.ttl(key)
    meta = pipe.execute()
    kinds = [kind.decode() for kind in meta[0::2]]
    readers = {
        "string": lambda p, k: p.get(k),
        "hash": lambda p, k: p.hgetall(k),
        "list": lambda p, k: p.lrange(k, 0, -1),
        "set": lambda p, k: p.smembers(k),
        "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
    }
    for key, kind in zip(keys, kinds):
        readers[kind](pipe, key)
    values = pipe.execute()
    out: dict[bytes, Any] = {}
    for key, kind, ttl, value in zip(keys, kinds, meta[1::2], values):
        if kind == "set":
            value = sorted(value)
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


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it is truthy (and return it); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def job_hash(r: redis.Redis, queue: str, job_id: str) -> dict[str, str]:
    """A job's hash, decoded."""
    raw = r.hgetall(f"{{{queue}}}:job:{job_id}")
    return {k.decode(): v.decode() for k, v in raw.items()}


def tagged(value: Any) -> Any:
    """Monitor results as comparable data: dataclasses as (class name, dict), lists item by
    item, anything else as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, dataclasses.asdict(value))
    if isinstance(value, list):
        return [tagged(item) for item in value]
    return value


class BlockingView:
    """An asyncio object seen through blocking calls: each method call runs its coroutine
    on the loop thread and returns (or raises) what it gave, so a test body written for
    the blocking ``QueueMonitor`` drives ``AsyncQueueMonitor`` unchanged."""

    def __init__(self, target: Any, loop: Any) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop).result()

        return call


def module_imports(path: Path, top: Path) -> list[tuple[int, str]]:
    """(line, module name) of every import in the source file ``path`` (read as an AST, so
    an import inside a function or under ``TYPE_CHECKING`` counts too). A relative import
    is named from ``top``, the directory holding the package (``..client`` →
    ``omniq_fast.client``); ``from M import n`` gives both ``M`` and ``M.n``."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(top).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found
