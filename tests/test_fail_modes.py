"""The middleware in front of a Redis store that fails: what the user and the platform team see.

Real `redis-server` processes of this module's own (paused with SIGSTOP, killed with SIGKILL),
never a fake. Every wait is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.store import create_store
from guardrail.store.cache import StateCache
from guardrail.store.redis import RedisStore
from tests.conftest import ClientFactory, make_policy
from tests.store.redis_servers import RedisServer
from tests.upstream import Upstream, item

MERGE = {"content-type": "application/merge-patch+json"}
ROUTE = "/recommendations"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as redis_server:
        yield redis_server


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[RedisStore]:
    backend = create_store(server.url, timeout=0.02)
    assert isinstance(backend, RedisStore)
    try:
        yield backend
    finally:
        await backend.aclose()


def ids(response: httpx.Response) -> list[str]:
    return [entry["id"] for entry in response.json()["items"]]


async def patch(client: httpx.AsyncClient, user: str, body: dict[str, Any]) -> httpx.Response:
    return await client.patch(
        "/guardrail/v1/controls", headers={"x-user-id": user, **MERGE}, content=orjson.dumps(body)
    )


async def timed_get(client: httpx.AsyncClient, path: str, user: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await client.get(path, headers={"x-user-id": user})
    return response, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# fail_mode: closed


async def test_closed_with_the_store_hung_shows_only_non_personalized_items(
    server: RedisServer, store: RedisStore, client_for: ClientFactory
) -> None:
    registry = CollectorRegistry()
    upstream = Upstream()
    client = client_for(GuardrailMiddleware(upstream, policy=make_policy(), store=store, registry=registry))
    assert (await patch(client, "alice", {"consent": {"personalization": "granted"}})).status_code == 200

    server.pause()
    response, elapsed = await timed_get(client, ROUTE, "bob")
    print(f"fail closed answered in {elapsed * 1000:.1f} ms")

    assert elapsed < 1.0
    assert response.status_code == 200
    assert response.headers["guardrail-degraded"] == "1"
    assert ids(response) == ["s1"]  # the only item with `signals: []`
    assert response.headers["guardrail-hidden"] == "5"
    assert response.json()["guardrail"]["degraded"] is True
    assert response.json()["guardrail"]["hidden"] == 5
    # Nothing personal could be checked: the upstream was asked for the non-personalized list.
    assert upstream.seen[-1]["path"] == "/recommendations/popular"
    assert registry.get_sample_value("guardrail_fail_mode_total", {"mode": "closed"}) == 1
    assert (
        registry.get_sample_value("guardrail_hidden_items_total", {"route": ROUTE, "reason": "store_unavailable"}) == 5
    )


async def test_closed_with_the_store_hung_still_honours_a_mute_it_has_seen(
    server: RedisServer, store: RedisStore, client_for: ClientFactory
) -> None:
    """Consent cannot be trusted from a cache, but a restriction can: a muted topic stays hidden."""
    client = client_for(
        GuardrailMiddleware(Upstream(), policy=make_policy(), store=store, registry=CollectorRegistry())
    )
    granted = {"consent": {"personalization": "granted"}, "muted": {"sports": {"until": None}}}
    assert (await patch(client, "alice", granted)).status_code == 200
    assert "s1" not in ids(await client.get(ROUTE, headers={"x-user-id": "alice"}))  # cached now

    server.pause()
    during = await client.get(ROUTE, headers={"x-user-id": "alice"})
    assert during.headers["guardrail-degraded"] == "1"
    assert ids(during) == []  # s1, the only non-personalized item, is about sports
    never_seen = await client.get(ROUTE, headers={"x-user-id": "bob"})
    assert ids(never_seen) == ["s1"]


# ---------------------------------------------------------------------------------------------
# fail_mode: open


async def test_open_with_a_cached_state_keeps_consented_items_and_hides_sensitive_ones(
    server: RedisServer, client_for: ClientFactory
) -> None:
    # A short cache age, so that the entry is past it (a miss, then a failing fetch) while the
    # server hangs, but still there as the last known state.
    store = RedisStore.from_url(server.url, timeout=0.02, cache=StateCache(max_age=0.2))
    registry = CollectorRegistry()
    try:
        middleware = GuardrailMiddleware(
            Upstream(), policy=make_policy(fail_mode="open"), store=store, registry=registry
        )
        client = client_for(middleware)
        body = {"consent": {"personalization": "granted"}, "sensitive": {"health": True}}
        assert (await patch(client, "carol", body)).status_code == 200
        before, _ = await timed_get(client, ROUTE, "carol")
        assert "h1" in ids(before), "the opt-in into health should show h1 while the store answers"
        assert "guardrail-degraded" not in before.headers

        server.pause()
        await asyncio.sleep(0.25)  # past the cache's max_age
        response, elapsed = await timed_get(client, ROUTE, "carol")

        assert elapsed < 1.0
        assert response.status_code == 200
        assert response.headers["guardrail-degraded"] == "1"
        # Personalized, non-sensitive items: shown per the cached consent.
        assert ids(response) == ["m1", "m2", "s1", "p1"]
        # Sensitive ones fail closed, even though carol opted into health before the outage.
        assert response.headers["guardrail-hidden"] == "2"
        assert response.json()["guardrail"]["degraded"] is True
        assert (
            registry.get_sample_value("guardrail_hidden_items_total", {"route": ROUTE, "reason": "store_unavailable"})
            == 2
        )
        assert registry.get_sample_value("guardrail_fail_mode_total", {"mode": "open"}) == 1
    finally:
        await store.aclose()


async def test_open_without_a_cached_state_applies_purpose_defaults(
    server: RedisServer, store: RedisStore, client_for: ClientFactory
) -> None:
    upstream = Upstream(
        body={
            "items": [
                item("plays", ["sports"], ["play_count"]),
                item("watched", ["movies"], ["watch_history"]),
                item("popular", ["sports"], []),
            ]
        }
    )
    registry = CollectorRegistry()
    client = client_for(
        GuardrailMiddleware(upstream, policy=make_policy(fail_mode="open"), store=store, registry=registry)
    )
    assert (await client.get("/guardrail/readyz")).status_code == 200

    server.pause()
    response, elapsed = await timed_get(client, ROUTE, "never-seen")

    assert elapsed < 1.0
    assert response.status_code == 200
    assert response.headers["guardrail-degraded"] == "1"
    # measurement defaults to granted, personalization to denied.
    assert ids(response) == ["plays", "popular"]
    assert response.headers["guardrail-hidden"] == "1"
    assert registry.get_sample_value("guardrail_fail_mode_total", {"mode": "open"}) == 1


# ---------------------------------------------------------------------------------------------
# The controls API and readiness while the store is down


async def test_a_change_while_the_store_hangs_is_refused_and_not_applied_later(
    server: RedisServer, store: RedisStore, client_for: ClientFactory
) -> None:
    client = client_for(
        GuardrailMiddleware(Upstream(), policy=make_policy(), store=store, registry=CollectorRegistry())
    )
    first = await patch(client, "dave", {"consent": {"personalization": "granted"}})
    assert first.status_code == 200
    assert first.json()["revision"] == 1

    server.pause()
    started = time.perf_counter()
    refused = await patch(client, "dave", {"personalization": False})
    elapsed = time.perf_counter() - started
    print(f"PATCH refused after {elapsed:.3f} s")
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["retry-after"]) >= 1
    assert "nothing was saved" in refused.json()["detail"]
    assert elapsed < 2.0

    server.resume()
    deadline = time.monotonic() + 2.0
    while True:
        current = await client.get("/guardrail/v1/controls", headers={"x-user-id": "dave"})
        if current.status_code == 200:
            break
        assert time.monotonic() < deadline, current.text
        await asyncio.sleep(0.02)
    # Let the server work through whatever was left in its buffers, then read again.
    await asyncio.sleep(0.1)
    store.cache.clear()
    current = await client.get("/guardrail/v1/controls", headers={"x-user-id": "dave"})
    assert current.status_code == 200
    # 503 said "Nothing was changed": the refused change must not appear once the server is back.
    assert current.json()["personalization"] is True, "a change answered with 503 was applied later"
    assert current.json()["revision"] == 1

    again = await patch(client, "dave", {"signals": {"watch_history": False}})
    assert again.status_code == 200
    assert again.json()["signals"] == {"watch_history": False}


async def test_a_change_while_the_store_is_dead_is_refused_and_a_retry_succeeds(
    server: RedisServer, store: RedisStore, client_for: ClientFactory
) -> None:
    client = client_for(
        GuardrailMiddleware(Upstream(), policy=make_policy(), store=store, registry=CollectorRegistry())
    )
    assert (await client.get("/guardrail/readyz")).status_code == 200
    server.kill()

    refused = await patch(client, "erin", {"personalization": False})
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.headers["retry-after"] == "1"

    server.restart()
    deadline = time.monotonic() + 2.0
    while True:
        retried = await patch(client, "erin", {"personalization": False})
        if retried.status_code == 200:
            break
        assert retried.status_code == 503
        assert time.monotonic() < deadline, "the change could not be made within 2 s of the restart"
        await asyncio.sleep(0.02)
    assert retried.json()["personalization"] is False
    assert retried.json()["revision"] == 1


@pytest.mark.parametrize("fault", ["pause", "kill"])
async def test_readyz_is_503_while_down_and_200_after_recovery(
    server: RedisServer, store: RedisStore, client_for: ClientFactory, fault: str
) -> None:
    client = client_for(
        GuardrailMiddleware(Upstream(), policy=make_policy(), store=store, registry=CollectorRegistry())
    )
    assert (await client.get("/guardrail/readyz")).status_code == 200

    if fault == "pause":
        server.pause()
    else:
        server.kill()
    started = time.perf_counter()
    down = await client.get("/guardrail/readyz")
    assert time.perf_counter() - started < 1.0
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"

    if fault == "pause":
        server.resume()
    else:
        server.restart()
    started = time.perf_counter()
    while (await client.get("/guardrail/readyz")).status_code != 200:
        assert time.perf_counter() - started < 2.0, "readyz stayed 503 after the store came back"
        await asyncio.sleep(0.02)
    print(f"readyz back to 200 {time.perf_counter() - started:.3f} s after {fault} ended")
