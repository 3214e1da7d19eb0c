"""A guarded service with a review section, on memory and on a real Redis, and what reviewers and users do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.policy.models import Policy
from guardrail.store import Store, create_store
from tests.conftest import ClientFactory, make_policy
from tests.store.redis_servers import RedisServer
from tests.upstream import Upstream, item

REVIEWER = "staff-1"
REVIEW = {"reviewers": [REVIEWER], "invasiveness_at": 20}
# Non-personalized items (no signals): kept for every user unless a topic is muted, or a reviewer blocks them.
ITEMS = [
    item("m1", ["movies"], []),
    item("u1", ["sportsbook"], []),
    item("u2", ["Sportsbook", "movies"], []),
    item("x1", ["crypto"], []),
]


def review_policy(**overrides: Any) -> Policy:
    return make_policy(review=REVIEW, **overrides)


def as_user(user: str) -> dict[str, str]:
    return {"x-user-id": user}


class Service:
    """The guarded service on one store: users ask for recommendations, reviewers work the queue."""

    def __init__(self, app: GuardrailMiddleware, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.store: Store = app.store

    async def shown(self, user: str = "alice") -> list[str]:
        response = await self.client.get("/recommendations", headers=as_user(user))
        assert response.status_code == 200, response.text
        return [entry["id"] for entry in response.json()["items"]]

    async def queue(self, user: str = REVIEWER) -> httpx.Response:
        await self.store.review_queue().flush()
        return await self.client.get("/guardrail/v1/review/queue", headers=as_user(user))

    async def entry(self, kind: str, subject: str) -> dict[str, Any]:
        response = await self.queue()
        key = "category" if kind == "unknown_category" else "item"
        found = [e for e in response.json()["entries"] if e["kind"] == kind and e[key] == subject]
        assert found, f"no {kind} entry for {subject!r} in {response.json()}"
        entry: dict[str, Any] = found[0]
        return entry

    async def decide(self, entry: str, body: dict[str, Any], user: str = REVIEWER) -> httpx.Response:
        return await self.client.post(
            f"/guardrail/v1/review/{entry}",
            headers={**as_user(user), "content-type": "application/json"},
            content=orjson.dumps(body),
        )

    async def audit(self) -> list[dict[str, Any]]:
        response = await self.client.get("/guardrail/v1/review/audit", headers=as_user(REVIEWER))
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries


def middleware(store: str | Store, policy: Policy | None = None) -> GuardrailMiddleware:
    return GuardrailMiddleware(
        Upstream(body={"items": ITEMS}),
        policy=policy if policy is not None else review_policy(),
        store=store,
        registry=CollectorRegistry(),
    )


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture(params=["memory", "redis"])
async def service(request: pytest.FixtureRequest, client_for: ClientFactory) -> AsyncIterator[Service]:
    if request.param == "memory":
        yield Service(app := middleware("memory://"), client_for(app))
        return
    # A server of the test's own: the queue and the audit are shared by everything on a server.
    with RedisServer() as server:
        store = create_store(server.url, timeout=1.0)
        try:
            app = middleware(store)
            yield Service(app, client_for(app))
        finally:
            await store.aclose()
