"""Handlers the CLI tests start workers with (``cli_jobs:NAME``, on PYTHONPATH)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis

from omniq_fast import JobCtx

_r: Any = None


def _redis() -> Any:
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _r


def record(ctx: JobCtx) -> None:
    """Sleeps ``payload["sleep"]`` seconds, then records the job as done (a set per queue)."""
    time.sleep(ctx.payload.get("sleep", 0) if isinstance(ctx.payload, dict) else 0)
    _redis().sadd("{" + ctx.queue + "}:test:done", ctx.job_id)
    _redis().incr("{" + ctx.queue + "}:test:runs")


async def record_async(ctx: JobCtx) -> None:
    await asyncio.sleep(ctx.payload.get("sleep", 0))
    _redis().sadd("{" + ctx.queue + "}:test:done", ctx.job_id)


def explode(ctx: JobCtx) -> None:
    def inner() -> None:
        raise ValueError(f"bad input {ctx.payload.get('n')}")

    inner()


class settings:
    """A settings object: hooks and defaults."""

    concurrency = 2
    queues = [os.environ.get("CLI_TEST_QUEUE", "q"), os.environ.get("CLI_TEST_QUEUE", "q") + "b"]
    handler = staticmethod(record_async)

    @staticmethod
    async def on_startup(client: Any) -> None:
        _redis().set("{" + settings.queue_for_hooks() + "}:test:started", "1")

    @staticmethod
    def on_shutdown(client: Any) -> None:
        _redis().set("{" + settings.queue_for_hooks() + "}:test:stopped", "1")

    @staticmethod
    def queue_for_hooks() -> str:
        return os.environ["CLI_TEST_QUEUE"]
