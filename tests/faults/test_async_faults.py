"""AsyncClient's pipelined connection under real network faults (the fault proxy).

A failure must fail exactly the calls whose bytes were on the wire, with ConnectionLost
(ServerTimeout for a timeout), never hand a reply to the wrong caller, and leave the client
working: the next call reconnects.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from omniq_fast import AsyncClient, ConnectionLost, ServerTimeout
from proxy import FaultProxy
from servers import ServerProcess

Q = "aq"


def _in_flight(c: AsyncClient) -> int:
    link = c._engine.connection._link
    return 0 if link is None else len(link.pending)


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_reset_fails_exactly_the_calls_in_flight(server: ServerProcess, proxy: FaultProxy) -> None:
    async def main() -> tuple[list[Any], list[Any], str]:
        async with AsyncClient(proxy.url) as c:
            before = await asyncio.gather(
                *(c.publish(Q, {"i": i}, job_id=f"b{i}") for i in range(20))
            )
            proxy.stall()
            stuck = [
                asyncio.ensure_future(c.publish(Q, {"i": i}, job_id=f"s{i}")) for i in range(20)
            ]
            # The 20 publishes of one loop turn are one enqueue_batch request: written,
            # not answered.
            await _until(lambda: _in_flight(c) == 1)
            proxy.reset()
            proxy.heal()
            lost = await asyncio.gather(*stuck, return_exceptions=True)
            after = await c.publish(Q, {"after": 1}, job_id="after")
            return before, lost, after

    before, lost, after = asyncio.run(main())
    assert before == [f"b{i}" for i in range(20)]
    assert all(isinstance(e, ConnectionLost) and not isinstance(e, ServerTimeout) for e in lost)
    assert "unknown" in str(lost[0])
    assert after == "after"
    admin = server.admin()
    assert admin.exists("{aq}:job:after") and admin.exists("{aq}:job:b19")


def test_a_reply_cut_mid_stream_never_reaches_the_wrong_caller(
    server: ServerProcess, proxy: FaultProxy
) -> None:
    admin = server.admin()
    ids = [f"j{i}" for i in range(200)]

    async def main() -> tuple[list[Any], Any]:
        async with AsyncClient(server.url) as direct:
            for i, job_id in enumerate(ids):
                await direct.publish(Q, {"i": i}, job_id=job_id, timeout_ms=1000 + i)
        async with AsyncClient(proxy.url) as c:
            await c.is_paused(Q)  # connected before the fault
            proxy.cut_replies_after(700)
            calls = []
            for job_id in ids:
                calls.append(c.job_timeout_ms(Q, job_id))  # a read: sent again once if lost
                calls.append(c.promote_delayed(Q))  # a script: its loss is reported
            results = await asyncio.gather(*calls, return_exceptions=True)
            return results, await c.promote_delayed(Q)

    results, after = asyncio.run(main())
    assert results[0::2] == [1000 + i for i in range(200)]  # every read, right value
    scripts = results[1::2]
    lost = [v for v in scripts if isinstance(v, ConnectionLost)]
    assert lost, "the cut should have hit calls in flight"
    assert all(v == 0 or isinstance(v, ConnectionLost) for v in scripts)
    # Answered calls came first, lost ones after: one cut, in order.
    first_lost = next(i for i, v in enumerate(scripts) if isinstance(v, ConnectionLost))
    assert all(v == 0 for v in scripts[:first_lost])
    assert after == 0
    assert admin.llen("{aq}:wait") == 200


def test_an_unreadable_reply_is_a_lost_connection(server: ServerProcess, proxy: FaultProxy) -> None:
    async def main() -> tuple[Any, bool]:
        async with AsyncClient(proxy.url) as c:
            await c.pause(Q)  # the script is loaded: the next pause runs at once
            await c.resume(Q)
            proxy.corrupt_next_reply()
            with pytest.raises(ConnectionLost) as info:
                await c.pause(Q)
            return info.value, await c.is_paused(Q)

    error, paused = asyncio.run(main())
    assert "unreadable" in str(error)
    assert paused is True  # the pause did run; only its reply was damaged


def test_a_frozen_server_times_out(server: ServerProcess, proxy: FaultProxy) -> None:
    async def main() -> str:
        async with AsyncClient(proxy.url, socket_timeout=0.5) as c:
            await c.is_paused(Q)
            proxy.stall()
            with pytest.raises(ServerTimeout):
                await c.publish(Q, {"a": 1}, job_id="t1")
            proxy.heal()
            return await c.publish(Q, {"a": 2}, job_id="t2")

    assert asyncio.run(main()) == "t2"


def test_publish_many_sends_lost_batches_again(server: ServerProcess, proxy: FaultProxy) -> None:
    admin: redis.Redis = server.admin()

    async def main() -> list[str]:
        async with AsyncClient(proxy.url) as c:
            await c.is_paused(Q)
            proxy.cut_replies_after(300)
            return await c.publish_many(Q, [{"i": i} for i in range(3000)], batch_size=250, retry=3)

    ids = asyncio.run(main())
    assert len(set(ids)) == 3000
    assert admin.llen("{aq}:wait") == 3000  # nothing twice, nothing missing
