"""The Redis store against a real server that hangs (SIGSTOP), crashes (SIGKILL) and comes back.

What is asserted is what a user of the store notices: how long a call takes to fail, when calls
work again, whether a cached state is served without Redis, and whether a replica ever serves a
state that another replica already changed. Every wait is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import uuid4

import pytest
from prometheus_client import CollectorRegistry

from guardrail.controls import validate_patch
from guardrail.engine.decisions import Action, ItemDecision
from guardrail.errors import StoreError
from guardrail.metrics import Metrics
from guardrail.state import UserState
from guardrail.store import DecisionRecord, create_store
from guardrail.store.cache import StateCache
from guardrail.store.redis import RedisStore
from tests.conftest import make_policy
from tests.store.redis_servers import RedisServer

POLICY = make_policy()
BUDGET = 0.02  # seconds: the store's per-call budget on the request path
FAST = 0.5  # seconds: "fails fast", an order of magnitude above the budget, far below any socket timeout
RECOVERY = 2.0  # seconds for calls to work again once the server answers

T = TypeVar("T")


def redis_store(server: RedisServer, timeout: float = BUDGET, metrics: Metrics | None = None) -> RedisStore:
    store = create_store(server.url, timeout=timeout, metrics=metrics)
    assert isinstance(store, RedisStore)
    return store


@pytest.fixture
def registry() -> CollectorRegistry:
    """Where the `store` fixture counts."""
    return CollectorRegistry()


@pytest.fixture
async def store(fresh_redis: RedisServer, registry: CollectorRegistry) -> AsyncIterator[RedisStore]:
    backend = redis_store(fresh_redis, metrics=Metrics(registry))
    try:
        yield backend
    finally:
        await backend.aclose()


async def change(store: RedisStore, user: str, body: dict[str, Any]) -> UserState:
    now = datetime.now(UTC)
    return await store.patch(user, validate_patch(POLICY, body, now), if_match=None, now=now)


async def eventually(attempt: Callable[[], Awaitable[T]], deadline: float, what: str) -> tuple[T, float]:
    """Retry `attempt` (StoreError counts as not yet) until it succeeds; (its result, seconds taken)."""
    started = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - started < deadline:
        try:
            return await attempt(), time.monotonic() - started
        except StoreError as exc:
            last = exc
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen within {deadline} s (last error: {last})")


async def timed_failure(call: Awaitable[Any]) -> float:
    started = time.perf_counter()
    with pytest.raises(StoreError):
        await call
    return time.perf_counter() - started


def user_id() -> str:
    return f"fault-{uuid4().hex}"


# ---------------------------------------------------------------------------------------------
# A hung server


async def test_hung_server_fails_within_the_budget_and_recovers(fresh_redis: RedisServer, store: RedisStore) -> None:
    user = user_id()
    await store.check()  # connected and listening before the fault
    fresh_redis.pause()

    elapsed = await timed_failure(store.load(user))
    print(f"hang detected after {elapsed * 1000:.1f} ms")
    assert elapsed < FAST, f"a load against a hung server took {elapsed:.3f} s, not about {BUDGET} s"

    # More calls: each fails fast, and the breaker opens after a few.
    for _ in range(3):
        assert await timed_failure(store.load(user)) < FAST
    assert store.breaker.is_open

    fresh_redis.resume()
    state, took = await eventually(lambda: store.load(user), RECOVERY, "a load after SIGCONT")
    print(f"loads work again {took:.3f} s after the resume")
    assert state is None
    assert not store.breaker.is_open


async def test_paused_server_does_not_block_other_users_for_long(fresh_redis: RedisServer, store: RedisStore) -> None:
    await store.check()
    fresh_redis.pause()
    started = time.perf_counter()
    results = await asyncio.gather(*(store.load(user_id()) for _ in range(20)), return_exceptions=True)
    elapsed = time.perf_counter() - started
    assert all(isinstance(r, StoreError) for r in results), results
    assert elapsed < FAST, f"20 concurrent loads against a hung server took {elapsed:.3f} s"


# ---------------------------------------------------------------------------------------------
# A crashed server


async def test_killed_server_fails_fast_opens_the_breaker_and_recovers_after_restart(
    fresh_redis: RedisServer, store: RedisStore
) -> None:
    user = user_id()
    await change(store, user, {"personalization": False})
    fresh_redis.kill()

    elapsed = await timed_failure(store.load(f"{user}-cold"))
    print(f"crash detected after {elapsed * 1000:.1f} ms")
    assert elapsed < FAST

    for _ in range(3):
        assert await timed_failure(store.load(f"{user}-cold")) < FAST
    assert store.breaker.is_open

    # Open: no waiting at all, and the error says why.
    started = time.perf_counter()
    with pytest.raises(StoreError, match="circuit open"):
        await store.load(f"{user}-cold")
    assert time.perf_counter() - started < 0.01

    fresh_redis.restart()  # the same port, empty
    state, took = await eventually(lambda: store.load(f"{user}-cold"), RECOVERY, "a load after the restart")
    print(f"loads work again {took:.3f} s after the restart returned")
    assert took <= RECOVERY
    assert state is None
    # The restarted server is empty: the pre-crash state is not served from the cache either.
    assert await store.load(user) is None


async def test_breaker_lets_one_trial_through_and_reopens_while_still_down(
    fresh_redis: RedisServer, store: RedisStore
) -> None:
    await store.check()
    fresh_redis.kill()
    for _ in range(3):
        await timed_failure(store.load(user_id()))
    assert store.breaker.is_open
    await asyncio.sleep(store.breaker.reset_after + 0.05)
    # The trial fails (still down) and the breaker opens again at once: the next call is not attempted.
    await timed_failure(store.load(user_id()))
    with pytest.raises(StoreError, match="circuit open"):
        await store.load(user_id())


# ---------------------------------------------------------------------------------------------
# The local cache


async def test_an_injected_cache_is_used(fresh_redis: RedisServer) -> None:
    cache = StateCache(max_age=0.2)
    store = RedisStore.from_url(fresh_redis.url, timeout=BUDGET, cache=cache)
    try:
        assert store.cache is cache, "an empty StateCache passed as `cache` was replaced by a default one"
    finally:
        await store.aclose()


async def test_a_warm_cache_answers_without_redis(
    fresh_redis: RedisServer, store: RedisStore, registry: CollectorRegistry
) -> None:
    user = user_id()
    written = await change(store, user, {"consent": {"personalization": "granted"}, "sensitive": {"health": True}})
    await store.load(user)  # starts following the invalidation channel
    await asyncio.wait_for(store.subscribed.wait(), 2.0)
    loaded = await store.load(user)  # cached from now on
    assert loaded == written

    fresh_redis.pause()
    started = time.perf_counter()
    again = await store.load(user)
    elapsed = time.perf_counter() - started
    assert again == written
    assert elapsed < BUDGET, f"a cache hit took {elapsed * 1000:.1f} ms"
    assert store.last_known(user) == written
    assert registry.get_sample_value("guardrail_cache_lookups_total", {"result": "hit"}) == 1
    assert registry.get_sample_value("guardrail_store_errors_total", {"op": "load"}) is None


async def test_concurrent_misses_coalesce_into_one_fetch(store: RedisStore, registry: CollectorRegistry) -> None:
    user = user_id()
    await change(store, user, {"personalization": False})
    await store.check()  # a connection is open: the burst measures coalescing, not connecting
    store.cache.clear()

    states = await asyncio.gather(*(store.load(user) for _ in range(20)))

    assert all(state is not None and state.personalization is False for state in states)
    assert registry.get_sample_value("guardrail_cache_lookups_total", {"result": "miss"}) == 1
    assert registry.get_sample_value("guardrail_cache_lookups_total", {"result": "coalesced"}) == 19
    assert registry.get_sample_value("guardrail_store_seconds_count", {"op": "load"}) == 1


async def test_concurrent_misses_against_a_hung_server_share_one_failure(
    fresh_redis: RedisServer, store: RedisStore, registry: CollectorRegistry
) -> None:
    user = user_id()
    await store.check()
    fresh_redis.pause()
    results = await asyncio.gather(*(store.load(user) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    assert registry.get_sample_value("guardrail_store_errors_total", {"op": "load"}) == 1
    assert not store.breaker.is_open  # one failure, not twenty


# ---------------------------------------------------------------------------------------------
# Invalidation across replicas


async def test_a_change_reaches_another_replica_and_a_lost_channel_clears_its_cache(
    fresh_redis: RedisServer,
) -> None:
    user = user_id()
    a, b = redis_store(fresh_redis), redis_store(fresh_redis)
    try:
        await change(a, user, {"consent": {"personalization": "granted"}})
        await b.load(user)  # b's listener starts
        await b.check()
        warm = await b.load(user)
        assert warm is not None and warm.consent == {"personalization": "granted"}
        assert b.cache.get(user)[0], "b's cache should be warm"

        await change(a, user, {"consent": {"personalization": "denied"}})
        started = time.monotonic()
        while True:
            seen = await b.load(user)
            assert seen is not None
            if seen.consent == {"personalization": "denied"}:
                break
            assert time.monotonic() - started < 0.1, "b still serves the old state after 100 ms"
            await asyncio.sleep(0.002)
        delay = time.monotonic() - started
        print(f"invalidation reached the other replica in {delay * 1000:.1f} ms")
        assert delay < 0.1

        # The channel drops: b can no longer hear about changes, so its cache is cleared and untrusted.
        before = await b.load(user)
        assert before is not None and b.cache.get(user)[0]
        fresh_redis.kill()
        started = time.monotonic()
        while len(b.cache) != 0 and b.cache.trusted:
            assert time.monotonic() - started < 2.0, "b kept trusting its cache after the channel dropped"
            await asyncio.sleep(0.005)
        print(f"b dropped its cache {(time.monotonic() - started) * 1000:.1f} ms after the crash")
        assert not b.cache.get(user)[0]

        fresh_redis.restart()
        after, _ = await eventually(
            lambda: change(a, user, {"consent": {"personalization": "granted"}, "signals": {"watch_history": False}}),
            3.0,
            "a change after the restart",
        )
        # From now on b may be unable to answer, but must never answer with the pre-restart state.
        deadline = time.monotonic() + 3.0
        fresh_seen = 0
        while fresh_seen < 5:
            assert time.monotonic() < deadline, "b did not serve the post-restart state in time"
            try:
                seen = await b.load(user)
            except StoreError:
                await asyncio.sleep(0.01)
                continue
            assert seen == after, f"b served {seen}, not the state written after the restart"
            fresh_seen += 1
    finally:
        await a.aclose()
        await b.aclose()


# ---------------------------------------------------------------------------------------------
# Decision records


def make_record(user: str) -> DecisionRecord:
    return DecisionRecord(
        id=uuid4().hex,
        user=user,
        created_at=time.time(),
        route="/recommendations",
        mode="enforce",
        policy="test-policy",
        locale="en",
        degraded=True,
        item_ids=["a"],
        decisions=[ItemDecision(Action.KEEP, (), 0, (), None)],
    )


async def test_decision_records_while_down_are_counted_as_dropped(
    fresh_redis: RedisServer, store: RedisStore, registry: CollectorRegistry
) -> None:
    user = user_id()
    await store.check()
    fresh_redis.kill()

    for _ in range(5):
        store.record(make_record(user))  # never raises, never blocks

    started = time.monotonic()
    while registry.get_sample_value("guardrail_decision_records_dropped_total") != 5:
        assert time.monotonic() - started < 2.0, registry.get_sample_value("guardrail_decision_records_dropped_total")
        await asyncio.sleep(0.02)
    assert len(store._queue) == 0  # not kept into a growing backlog

    fresh_redis.restart()
    await eventually(store.check, RECOVERY, "the store answering after the restart")
    store.record(make_record(user))
    records, _ = await eventually(
        lambda: _nonempty(store.decisions(user)), RECOVERY, "a record written after the restart"
    )
    assert len(records) == 1
    assert registry.get_sample_value("guardrail_decision_records_dropped_total") == 5


async def _nonempty(call: Awaitable[Any]) -> Any:
    result = await call
    if not result:
        raise StoreError("not yet")
    return result
