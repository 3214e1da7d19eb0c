"""Who is a reviewer (docs/review.md): a listed id, or a role in a verified token; and what a policy flags."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from tests.conftest import ClientFactory, make_policy
from tests.review.conftest import REVIEW, Service, as_user, middleware, review_policy
from tests.test_identity import SECRET, bearer, token
from tests.upstream import Upstream, item


@pytest.fixture
def role_policy(monkeypatch: pytest.MonkeyPatch) -> GuardrailMiddleware:
    monkeypatch.setenv("TEST_GUARDRAIL_JWT_KEY", SECRET)
    identity = {
        "source": "jwt",
        "jwt": {"key_env": "TEST_GUARDRAIL_JWT_KEY", "algorithms": ["HS256"], "audience": "recs", "issuer": "auth"},
    }
    policy = make_policy(identity=identity, review={"role_claim": "roles", "role": "reviewer"})
    return GuardrailMiddleware(Upstream(), policy=policy, registry=CollectorRegistry())


@pytest.mark.parametrize(
    ("roles", "status"),
    [(["reviewer"], 200), ("reviewer", 200), (["editor", "reviewer"], 200), (["editor"], 404), (None, 404)],
)
async def test_a_role_in_a_verified_token_makes_a_reviewer(
    role_policy: GuardrailMiddleware, client_for: ClientFactory, roles: object, status: int
) -> None:
    client = client_for(role_policy)
    response = await client.get("/guardrail/v1/review/queue", headers=bearer(token(roles=roles)))
    assert response.status_code == status


async def test_a_role_in_a_token_signed_with_another_key_counts_for_nothing(
    role_policy: GuardrailMiddleware, client_for: ClientFactory
) -> None:
    forged = token(key="another-secret-long-enough-for-hs256-" + "y" * 40, roles=["reviewer"])
    response = await client_for(role_policy).get("/guardrail/v1/review/queue", headers=bearer(forged))
    assert response.status_code == 404


async def test_items_over_invasiveness_at_are_flagged(client_for: ClientFactory) -> None:
    assert REVIEW["invasiveness_at"] == 20
    body = {
        "items": [
            item("near", ["movies"], ["location_precise"]),  # signal sensitivity 3: 30 points, kept discreetly
            item("low", ["movies"], ["watch_history"]),  # 10 points
        ]
    }
    app = GuardrailMiddleware(
        Upstream(body=body), policy=review_policy(), store="memory://", registry=CollectorRegistry()
    )
    service = Service(app, client_for(app))
    granted = await service.client.patch(
        "/guardrail/v1/controls",
        headers={**as_user("alice"), "content-type": "application/merge-patch+json"},
        content=b'{"consent": {"personalization": "granted"}}',
    )
    assert granted.status_code == 200
    assert await service.shown() == ["near", "low"]
    entry = await service.entry("flagged_item", "near")
    assert entry["examples"] == ["near"] and entry["count"] == 1
    flagged = [e for e in (await service.queue()).json()["entries"] if e["kind"] == "flagged_item"]
    assert [e["item"] for e in flagged] == ["near"]


async def test_without_invasiveness_at_nothing_is_flagged(client_for: ClientFactory) -> None:
    app = middleware("memory://", make_policy(review={"reviewers": ["staff-1"]}))
    service = Service(app, client_for(app))
    await service.shown()
    kinds = {e["kind"] for e in (await service.queue()).json()["entries"]}
    assert kinds == {"unknown_category"}
