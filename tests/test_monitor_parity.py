"""The blocking and the asyncio monitor: one surface, as the core twins are one surface
(``test_parity.py``). Both run the plans of ``omniq_fast._protocol.monitor``; these tests
hold their public faces equal so a view cannot exist, or read differently, on one only."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any, Callable

import redis
import redis.asyncio as aioredis

import omniq_fast
from omniq_fast import AsyncQueueMonitor, QueueMonitor
from omniq_fast.aio import monitor as aio_monitor
from omniq_fast import monitor as sync_monitor


def _public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: member for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member)
    }


def test_same_public_names() -> None:
    assert sorted(_public_methods(AsyncQueueMonitor)) == sorted(_public_methods(QueueMonitor))
    assert "AsyncQueueMonitor" in omniq_fast.__all__
    assert omniq_fast.AsyncQueueMonitor is aio_monitor.AsyncQueueMonitor
    assert aio_monitor.__all__ == ["AsyncQueueMonitor"]
    # The models are the blocking module's: one set of classes for both shells.
    for name in sync_monitor.__all__:
        if name != "QueueMonitor":
            assert getattr(aio_monitor, name) is getattr(sync_monitor, name), name


def test_same_signatures_and_docs() -> None:
    ours, theirs = _public_methods(AsyncQueueMonitor), _public_methods(QueueMonitor)
    for name, method in theirs.items():
        twin = ours[name]
        # Annotations are strings (postponed evaluation): equal text, equal types.
        assert inspect.signature(twin) == inspect.signature(method), name
        assert inspect.getdoc(twin) == inspect.getdoc(method), name
        assert inspect.getdoc(method), name


def test_every_public_async_method_is_a_coroutine_function() -> None:
    methods = _public_methods(AsyncQueueMonitor)
    assert methods
    for name, method in methods.items():
        assert inspect.iscoroutinefunction(method), name
    for name, method in _public_methods(QueueMonitor).items():
        assert not inspect.iscoroutinefunction(method), name


def test_constructors_take_the_same_arguments() -> None:
    def params(cls: type) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.default, p.kind)
                for p in inspect.signature(cls.__init__).parameters.values()]

    assert params(AsyncQueueMonitor) == params(QueueMonitor)


def test_async_accepts_a_redis_or_anything_with_a_redis_attribute(
    r: redis.Redis, redis_url: str, qname: str
) -> None:
    r.hset("{" + qname + "}:stats", "active", "2")

    async def check() -> list[int]:
        conn = aioredis.Redis.from_url(redis_url)
        try:
            monitors = [AsyncQueueMonitor(conn),
                        AsyncQueueMonitor(SimpleNamespace(redis=conn))]  # type: ignore[arg-type]
            return [(await m.stats(qname)).active for m in monitors]
        finally:
            await conn.aclose()

    assert asyncio.run(check()) == [2, 2]
