"""AsyncClient when a master dies: what ran, what did not, what is unknown.

A cluster of its own (3 masters, a replica each): the test kills a node. The victim master
is frozen (SIGSTOP) so calls sent to it are surely on the wire without a reply, then
SIGKILLed, then its replica is promoted. The client is never reconnected by the test:

* a publish in flight at the kill raises ConnectionLost (its effect is unknown) and is
  never sent again: after the failover it is not on the new master (the frozen victim
  never ran it, and nothing re-sent it);
* a heartbeat in flight at the kill is harmless to repeat: it is sent again once the
  replica took over, and answers;
* while the victim is down, a call with a short ``cluster_retry_s`` gives up with
  ClusterUnavailable within its bound and did not run;
* queues on the other masters work the whole time, also while the victim is frozen
  (their connections are their own);
* after the failover the victim's queue works again, with what was replicated before.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, Iterator

import pytest

from conftest import name_on
from omniq_fast import AsyncClient, ClusterUnavailable, ConnectionLost, ReservedJob
from omniq_fast.testing import EmbeddedCluster, find_server_binary
from test_resharding import node_client


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[EmbeddedCluster]:
    """A cluster for this module only: the test kills one of its nodes."""
    try:
        find_server_binary()
    except FileNotFoundError as exc:
        if os.environ.get("OMNIQ_FAST_CLUSTER_SERVER"):
            raise
        pytest.skip(f"no cluster server binary ({exc})")
    with EmbeddedCluster(masters=3, replicas=1) as started:
        yield started


def replicate(node: Any, queue: str) -> None:
    """Wait until ``node``'s replica has every write ``node`` made so far: WAIT counts
    the replicas that acknowledged this connection's own last write, so it writes first."""
    conn = node_client(node)
    try:
        conn.incr("{" + queue + "}:fence")
        assert conn.execute_command("WAIT", 1, 5000) == 1
        conn.delete("{" + queue + "}:fence")
        assert conn.execute_command("WAIT", 1, 5000) == 1
    finally:
        conn.close()


def test_a_killed_master_gives_unknown_or_not_run_and_its_replica_takes_over(
    own_cluster: EmbeddedCluster,
) -> None:
    cluster = own_cluster
    victim, other = cluster.masters()[0], cluster.masters()[1]
    (replica,) = cluster.replicas_of(victim)
    doomed, healthy = name_on(cluster, victim, "v"), name_on(cluster, other, "o")
    base = "{" + doomed + "}"

    async def main() -> None:
        async with AsyncClient(cluster.url, cluster_retry_s=15) as c, AsyncClient(
            cluster.url, cluster_retry_s=0.3
        ) as impatient:
            kept = await c.publish_many(doomed, [{"i": i} for i in range(5)], timeout_ms=60_000)
            job = await c.reserve(doomed)
            assert isinstance(job, ReservedJob) and job.job_id == kept[0]
            await c.publish(healthy, {"warm": True})
            await impatient.publish(healthy, {"warm": True})
            replicate(victim, doomed)

            assert victim.process is not None
            os.kill(victim.process.pid, signal.SIGSTOP)
            try:
                beat = asyncio.ensure_future(c.heartbeat(doomed, job.job_id, job.lease_token))
                lost = asyncio.ensure_future(c.publish(doomed, {"lost": 1}, job_id="unknown-1"))
                await asyncio.sleep(0.3)
                assert not beat.done() and not lost.done()  # on the wire, unanswered
                # The other masters do not wait for the frozen one.
                started = time.monotonic()
                await c.publish(healthy, {"meanwhile": True})
                assert time.monotonic() - started < 1.0
            finally:
                cluster.kill(victim)

            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(lost, 5)
            assert not beat.done()  # being sent again, once the slot has a master

            started = time.monotonic()
            with pytest.raises(ClusterUnavailable):
                await impatient.publish(doomed, {"never": 1}, job_id="not-run-1")
            took = time.monotonic() - started
            assert 0.3 <= took < 5.0, took
            with pytest.raises(ClusterUnavailable):
                await impatient.is_paused(doomed)
            assert (await impatient.publish(healthy, {"during": True}))  # other masters work

            await asyncio.to_thread(cluster.failover, replica)
            lock_until = await asyncio.wait_for(beat, 20)
            assert lock_until > 0  # the re-sent heartbeat ran on the promoted replica
            after = await c.publish(doomed, {"after": True})
            rest = await c.reserve_many(doomed, 10)
            assert [j.job_id for j in rest] == kept[1:] + [after]  # type: ignore[union-attr]
            await c.ack_success(doomed, job.job_id, job.lease_token)

    asyncio.run(asyncio.wait_for(main(), 90))
    conn = node_client(replica)  # the new master
    try:
        assert not conn.exists(f"{base}:job:unknown-1")  # never re-sent
        assert not conn.exists(f"{base}:job:not-run-1")  # ClusterUnavailable: did not run
        assert conn.llen(f"{base}:wait") == 0
    finally:
        conn.close()
