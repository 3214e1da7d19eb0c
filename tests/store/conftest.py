"""Fixtures for the store tests: real Redis servers, unique users, and `store` over every backend.

- `redis_server`  one `redis-server` for the whole session (shared: tests isolate themselves by user id)
- `redis_cluster` three masters for the whole session, started only if some test asks for it
- `fresh_redis`   a dedicated server for one test, free to be paused (SIGSTOP) or killed (SIGKILL)
- `user`          a fresh user id no other test uses; derive more as f"{user}-a", f"{user}-b", ...
- `store`         the same test once per backend: memory, redis, redis-cluster
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from uuid import uuid4

import pytest

from guardrail.store import Store, create_store
from tests.store.redis_servers import RedisCluster, RedisServer

DECISIONS_PER_USER = 5
RETENTION = timedelta(days=7)
BACKENDS = ["memory", "redis", "redis-cluster"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A server of this test's own, for fault tests; stopped afterwards even if paused or killed."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def user() -> str:
    return f"test-{uuid4().hex}"


def store_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL for a backend; the Redis servers are started only when a backend needs them."""
    if backend == "memory":
        return "memory://"
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    if backend == "redis-cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    raise AssertionError(f"unknown backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    url = store_url(request.param, request)
    # The contract is about what the store keeps, not how fast: the 20 ms request budget is tested
    # by the fault tests, and a busy CI machine can take longer than that to open a first connection.
    backend = create_store(url, decisions_per_user=DECISIONS_PER_USER, retention=RETENTION, timeout=1.0)
    try:
        yield backend
    finally:
        await backend.aclose()
