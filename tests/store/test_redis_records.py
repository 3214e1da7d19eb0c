"""Decision records on Redis: one script call per record, and a server that forgot its scripts (restart,
failover, SCRIPT FLUSH) still gets every record."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from guardrail.store import create_store
from guardrail.store.redis import RedisStore
from guardrail.store.redis_keys import records_key
from tests.store.conftest import DECISIONS_PER_USER, RETENTION, store_url
from tests.store.test_contract import make_record, wait_for_decisions


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    backend = create_store(
        store_url(request.param, request), decisions_per_user=DECISIONS_PER_USER, retention=RETENTION, timeout=1.0
    )
    assert isinstance(backend, RedisStore)
    try:
        yield backend
    finally:
        await backend.aclose()


async def test_records_land_after_the_server_forgot_its_scripts(redis_store: RedisStore, user: str) -> None:
    first = make_record(user)
    redis_store.record(first)
    await wait_for_decisions(redis_store, user, [first.id])
    await redis_store.client.script_flush()
    second = make_record(user)
    redis_store.record(second)
    await wait_for_decisions(redis_store, user, [second.id, first.id])
    assert await redis_store.client.llen(records_key(user)) == 2
    assert 0 < await redis_store.client.ttl(records_key(user)) <= RETENTION.total_seconds()


async def test_an_erase_on_one_replica_covers_records_queued_on_another(redis_store: RedisStore, user: str) -> None:
    assert redis_store.url is not None
    other = create_store(redis_store.url, decisions_per_user=DECISIONS_PER_USER, retention=RETENTION, timeout=1.0)
    try:
        queued = make_record(user)
        redis_store.record(queued)  # waiting for this replica's next batch
        await other.erase(user)  # the user's erase, answered by another replica
        after = make_record(user, queued.created_at + 1)
        redis_store.record(after)
        await wait_for_decisions(other, user, [after.id])
    finally:
        await other.aclose()
