"""A change made through one replica is seen by every other replica within 100 ms (docs/architecture.md §6),
on a single Redis and on a 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from guardrail.controls import validate_patch
from guardrail.store import create_store
from guardrail.store.redis import RedisStore
from tests.conftest import make_policy
from tests.store.conftest import store_url


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
async def test_every_replica_sees_a_change_within_100_ms(
    backend: str, user: str, request: pytest.FixtureRequest
) -> None:
    url = store_url(backend, request)
    policy = make_policy()
    replicas = [create_store(url, timeout=0.5) for _ in range(2)]
    writer, reader = replicas
    assert isinstance(reader, RedisStore)
    try:
        assert await reader.load(user) is None  # warm: the reader caches "no state" for the user
        await asyncio.wait_for(reader.subscribed.wait(), 5)
        assert await reader.load(user) is None
        delays = []
        for value in (False, True, False, True, False):
            now = datetime.now(UTC)
            await writer.patch(user, validate_patch(policy, {"personalization": value}, now), if_match=None, now=now)
            changed = time.perf_counter()
            while True:
                state = await reader.load(user)
                if state is not None and state.personalization is value:
                    break
                assert time.perf_counter() - changed < 0.1, (
                    f"replica still shows the old state after 100 ms on {backend}"
                )
                await asyncio.sleep(0.001)
            delays.append(time.perf_counter() - changed)
        # Between changes the reader answered from its cache: the invalidation, not the age, refreshed it.
        assert reader.cache.max_age >= 1
        assert max(delays) < 0.1
    finally:
        for replica in replicas:
            await replica.aclose()
