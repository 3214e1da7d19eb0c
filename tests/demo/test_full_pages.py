"""The demo recommender honours `Guardrail-Context` (docs/integrate.md#honouring-it-in-your-recommender): it
skips what the guardrail would hide and takes further candidates, so a user's page comes back full whatever they
muted. The same service told to ignore the header (`?context=ignore`) shows the other side: the guardrail hides
what it should not have picked, and the page comes back short."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.demo.app import demo_policy_path
from guardrail.demo.service import recommend_for, service
from guardrail.engine import CompiledPolicy
from guardrail.policy.loading import load_policy
from tests.conftest import ClientFactory

POLICY = load_policy(demo_policy_path())
SENSITIVE = CompiledPolicy(POLICY).sensitive_categories
GRANTED = {"personalization": "granted"}
# Three large topics of the demo catalog: a recommender that ignores them loses a third of its picks.
MUTED = ("movies", "music", "travel")
USERS: dict[str, dict[str, Any]] = {
    "ana": {"consent": GRANTED},  # said yes, muted nothing; no sensitive topic opted into
    "ben": {"consent": GRANTED, "muted": {topic: {"until": None} for topic in MUTED}},
    # Said yes to every purpose: only the sensitive topics she never opted into are left to hide.
    "sam": {"consent": {"personalization": "granted", "ads_sharing": "granted"}},
}


def under(category: str, topics: tuple[str, ...]) -> bool:
    return any(category == topic or category.startswith(topic + ".") for topic in topics)


@pytest.fixture
async def client(client_for: ClientFactory) -> httpx.AsyncClient:
    """The demo service behind the middleware, on the demo policy and the memory store, with the users above."""
    app = GuardrailMiddleware(service(), policy=POLICY, store="memory://", registry=CollectorRegistry())
    client = client_for(app)
    for user, controls in USERS.items():
        response = await client.patch(
            "/guardrail/v1/controls",
            content=orjson.dumps(controls),
            headers={"x-user-id": user, "content-type": "application/merge-patch+json"},
        )
        assert response.status_code == 200, response.text
    return client


async def page(client: httpx.AsyncClient, user: str, count: int | None, *, honoured: bool = True) -> dict[str, Any]:
    """A user's page; `honoured=False` asks the same service to ignore the context (`?context=ignore`)."""
    query: dict[str, str | int] = {} if count is None else {"count": count}
    if not honoured:
        query["context"] = "ignore"
    response = await client.get("/recommendations", params=query, headers={"x-user-id": user})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert body["guardrail"]["kept"] == len(body["items"])
    return body


@pytest.mark.parametrize(("count", "expected"), [(None, 12), (24, 24)], ids=["default-page", "count-24"])
async def test_three_muted_topics_still_get_a_full_page_with_none_of_them(
    client: httpx.AsyncClient, count: int | None, expected: int
) -> None:
    ana = await page(client, "ana", count)
    ben = await page(client, "ben", count)
    assert len(ben["items"]) == len(ana["items"]) == expected
    assert not [item["id"] for item in ben["items"] if any(under(c, MUTED) for c in item["categories"])]
    # The recommender asked only for what would be kept: the guardrail checked every item and hid none.
    assert ben["guardrail"]["hidden"] == 0
    assert ben["guardrail"]["notice"] is None
    assert all("explanation" in item for item in ben["items"])

    # The same service ignoring the header: the guardrail hides the muted picks and the page comes back short.
    ignored = await page(client, "ben", count, honoured=False)
    assert len(ignored["items"]) < expected
    assert ignored["guardrail"]["hidden"] == expected - len(ignored["items"])
    assert not [item["id"] for item in ignored["items"] if any(under(c, MUTED) for c in item["categories"])]


async def test_sensitive_topics_not_opted_into_are_left_out_and_the_page_stays_full(client: httpx.AsyncClient) -> None:
    honoured = await page(client, "sam", 24)
    assert len(honoured["items"]) == 24
    assert honoured["guardrail"]["hidden"] == 0
    assert not [item["id"] for item in honoured["items"] if any(under(c, SENSITIVE) for c in item["categories"])]

    # Ignoring the header, the service picks sensitive items on her personal data; the guardrail hides each one,
    # and only those (an editorial pick, relying on nothing personal, is not hers to opt into).
    picked = recommend_for("sam", 24)
    sensitive_picks = [
        item["id"] for item in picked if item["signals"] and any(under(c, SENSITIVE) for c in item["categories"])
    ]
    assert sensitive_picks
    ignored = await page(client, "sam", 24, honoured=False)
    assert len(ignored["items"]) == 24 - len(sensitive_picks)
    assert {item["id"] for item in ignored["items"]} == {item["id"] for item in picked} - set(sensitive_picks)


async def test_signals_not_allowed_are_not_used(client: httpx.AsyncClient) -> None:
    # `third_party` serves `ads_sharing`, which ana never granted: an honouring service never relies on it.
    honoured = await page(client, "ana", 40)
    assert len(honoured["items"]) == 40
    assert not [item["id"] for item in honoured["items"] if "third_party" in item["signals"]]
    ignored = await page(client, "ana", 40, honoured=False)
    assert len(ignored["items"]) < 40


async def test_not_personalized_gets_the_popular_list(client_for: ClientFactory) -> None:
    """Without a context, or with `personalized=?0`, the service serves what everyone gets and uses no signal,
    even on the personalized path (a sidecar route without a `non_personalized` rewrite)."""
    client = client_for(service())
    for headers in ({"x-user-id": "ana"}, {"x-user-id": "ana", "guardrail-context": "personalized=?0"}):
        body = (await client.get("/recommendations?count=5", headers=headers)).json()
        assert [item["signals"] for item in body["items"]] == [[]] * 5


def test_the_short_page_figure_shows_full_pages_only_when_honoured() -> None:
    """benchmarks/short_pages.py, the figure of docs/performance.md, on a few users."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from short_pages import measure

    rows = asyncio.run(measure(users=3, pages=[12]))
    muted = [(ignored, honoured) for state, _, ignored, honoured, _ in rows if "muted topic" in state]
    assert len(muted) == 5
    for ignored, honoured in muted:
        assert honoured == [12, 12, 12]
        assert max(ignored) < 12
