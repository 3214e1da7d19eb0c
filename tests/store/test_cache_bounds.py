"""The local cache's bounds come from the store URL, so one replica's memory is what its operator set."""

from __future__ import annotations

import pytest

from guardrail.errors import GuardrailError
from guardrail.store import create_store
from guardrail.store.redis import RedisStore
from tests.store.redis_servers import RedisServer


async def test_cache_entries_bound_what_one_replica_keeps(redis_server: RedisServer, user: str) -> None:
    store = create_store(f"{redis_server.url}?cache_entries=3&cache_seconds=30", timeout=1.0)
    assert isinstance(store, RedisStore)
    try:
        for index in range(10):
            assert await store.load(f"{user}-{index}") is None  # the URL still reaches the server
        assert len(store.cache) == 3
        assert store.cache.max_age == 30
        # The most recent users are the ones kept.
        assert [store.cache.get(f"{user}-{index}")[0] for index in (6, 7, 8, 9)] == [False, True, True, True]
    finally:
        await store.aclose()


async def test_the_defaults_without_options(redis_server: RedisServer) -> None:
    store = create_store(redis_server.url)
    assert isinstance(store, RedisStore)
    try:
        assert (store.cache.max_entries, store.cache.max_age) == (100_000, 60.0)
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("query", "named"),
    [("cache_entries=lots", "cache_entries='lots'"), ("cache_entries=0", "cache_entries='0'"),
     ("cache_seconds=-1", "cache_seconds='-1'")],
)  # fmt: skip
def test_a_bad_bound_is_named(redis_server: RedisServer, query: str, named: str) -> None:
    with pytest.raises(GuardrailError) as caught:
        create_store(f"{redis_server.url}?{query}")
    assert named in str(caught.value)
    assert "e.g." in str(caught.value)
