"""Changes to controls are rate-limited per user (issue 4): 429 problem+json with Retry-After."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware, PolicyError
from guardrail.store import create_store
from tests.conftest import ClientFactory, make_policy
from tests.store.redis_servers import RedisServer
from tests.upstream import Upstream

MERGE = {"content-type": "application/merge-patch+json"}


async def change(client: httpx.AsyncClient, user: str) -> httpx.Response:
    return await client.patch("/guardrail/v1/controls", headers={"x-user-id": user, **MERGE}, content=b"{}")


async def test_too_many_changes_get_429_with_retry_after(client_for: ClientFactory) -> None:
    middleware = GuardrailMiddleware(
        Upstream(), policy=make_policy(controls_rate_limit="3/minute"), registry=CollectorRegistry()
    )
    client = client_for(middleware)
    assert [(await change(client, "alice")).status_code for _ in range(3)] == [200, 200, 200]
    refused = await change(client, "alice")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "Try again in" in refused.json()["detail"]
    erase = await client.delete("/guardrail/v1/controls", headers={"x-user-id": "alice"})
    assert erase.status_code == 429  # erasing counts as a change too
    # Per user: bob is not slowed down by alice, and reading is never limited.
    assert (await change(client, "bob")).status_code == 200
    assert (await client.get("/guardrail/v1/controls", headers={"x-user-id": "alice"})).status_code == 200


async def test_the_limit_is_shared_through_redis(client_for: ClientFactory) -> None:
    server = RedisServer()
    server.start()
    stores = [create_store(server.url, timeout=0.5) for _ in range(2)]
    try:
        policy = make_policy(controls_rate_limit="2/minute")
        replicas = [
            client_for(GuardrailMiddleware(Upstream(), policy=policy, store=s, registry=CollectorRegistry()))
            for s in stores
        ]
        assert (await change(replicas[0], "carol")).status_code == 200
        assert (await change(replicas[1], "carol")).status_code == 200
        # The third change goes to the first replica, which counts the second replica's change too.
        assert (await change(replicas[0], "carol")).status_code == 429
    finally:
        for store in stores:
            await store.aclose()
        server.stop()


def test_a_bad_rate_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="is not a rate; write it like 30/minute"):
        make_policy(controls_rate_limit="lots")
