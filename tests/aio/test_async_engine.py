"""AsyncEngine.run_many: several calls in one write, replies in order, errors as values."""

from __future__ import annotations

import asyncio
from typing import Any

from omniq_fast import AsyncClient, ReplyError
from omniq_fast._engine import now_ms
from omniq_fast._protocol import calls


def test_run_many_reloads_flushed_scripts_and_returns_error_replies(
    redis_url: str, qname: str
) -> None:
    async def main() -> list[Any]:
        async with AsyncClient(redis_url) as c:
            engine = c._engine
            core = engine.core
            one = calls.publish(core, qname, {"a": 1}, "r1", 3, 30000, 5000, 0, None, 0, now_ms())
            two = calls.publish(core, qname, {"a": 2}, "r2", 3, 30000, 5000, 0, None, 0, now_ms())
            await c.redis.script_flush()
            bad = core.encode_command((b"HGET", b"only-one-arg"))
            assert one.script is not None and two.script is not None
            return await engine.run_many(
                one.anchor, [(one.script, one.data), (two.script, two.data)],
                [engine.wake_command(qname), bad],
            )  # fmt: skip

    first, second, woken, refused = asyncio.run(main())
    assert first[0] == b"OK" and second[0] == b"OK"  # loaded again, then run
    assert woken == 0  # PUBLISH's reply: nobody listens
    assert isinstance(refused, ReplyError)  # a value, not raised
