"""AsyncClient has no cluster mode yet: on a cluster node it refuses clearly, before any
call of ours ran, and a blocking Client is the way there."""

from __future__ import annotations

import asyncio

import pytest

from redis.cluster import RedisCluster

from omniq_fast import AsyncClient
from omniq_fast.aio._engine import ClusterNotSupported


def test_a_cluster_node_is_refused_on_first_use(
    redis_url: str, qname: str, r: RedisCluster
) -> None:
    async def main() -> None:
        async with AsyncClient(redis_url) as c:
            with pytest.raises(ClusterNotSupported) as info:
                await c.publish(qname, {"a": 1})
            assert isinstance(info.value, NotImplementedError)
            assert "omniq_fast.Client" in str(info.value)
            with pytest.raises(ClusterNotSupported):
                await c.publish_many(qname, [{"a": 1}])

    asyncio.run(main())
    assert not r.exists("{" + qname + "}:wait")  # nothing was queued
