"""`POST /guardrail/v1/reports` and the "why?" page's report form (docs/api.md#reports): a user reports an
item of one of their decisions, once; the report is theirs (export, erasure) and counted by reason."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.state import REPORT_REASONS
from tests.conftest import ClientFactory, make_policy
from tests.upstream import Upstream
from tests.web.test_why import FORM, as_user, consent, kept, recommend, token_from

REPORTS = "/guardrail/v1/reports"
JSON = {"content-type": "application/json"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(client_for: ClientFactory, registry: CollectorRegistry) -> httpx.AsyncClient:
    return client_for(GuardrailMiddleware(Upstream(), policy=make_policy(), registry=registry))


async def report(client: httpx.AsyncClient, body: Any, user: str = "alice", **headers: str) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(REPORTS, headers={**as_user(user), **JSON, **headers}, content=raw)


def reported(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("guardrail_reports_total", {"reason": reason}) or 0.0


async def test_a_report_is_made_once_kept_and_counted(client: httpx.AsyncClient, registry: CollectorRegistry) -> None:
    await consent(client)
    decision = (await recommend(client))["guardrail"]["decision"]
    made = await report(client, {"decision": decision, "item": "m1", "reason": "offensive", "note": "rude"})
    assert made.status_code == 201
    assert made.json() | {"created_at": "-"} == {
        "decision": decision,
        "item": "m1",
        "title": None,
        "route": "/recommendations",
        "reason": "offensive",
        "note": "rude",
        "created_at": "-",
    }
    again = await report(client, {"decision": decision, "item": "m1", "reason": "other"})
    assert again.status_code == 200
    assert again.json() == made.json()  # the first report stands
    assert reported(registry, "offensive") == 1
    assert reported(registry, "other") == 0
    # The item's view says it was reported, and offers no second report.
    view = (await client.get(f"/guardrail/v1/decisions/{decision}/items/m1", headers=as_user())).json()
    assert view["reported"] == "offensive"
    assert "report" not in [action["kind"] for action in view["actions"]]


async def test_the_export_carries_the_reports_and_an_erasure_removes_them(client: httpx.AsyncClient) -> None:
    await consent(client)
    decision = (await recommend(client))["guardrail"]["decision"]
    await report(client, {"decision": decision, "item": "m2", "reason": "wrong_topic"})
    exported = (await client.get("/guardrail/v1/export", headers=as_user())).json()
    assert [(r["decision"], r["item"], r["reason"]) for r in exported["reports"]] == [(decision, "m2", "wrong_topic")]
    assert (await client.delete("/guardrail/v1/controls", headers=as_user())).status_code == 204
    assert (await client.get("/guardrail/v1/export", headers=as_user())).json()["reports"] == []


async def test_only_your_own_decisions_can_be_reported(client: httpx.AsyncClient, registry: CollectorRegistry) -> None:
    await consent(client)
    decision = (await recommend(client))["guardrail"]["decision"]
    theirs = await report(client, {"decision": decision, "item": "m1", "reason": "offensive"}, user="mallory")
    assert theirs.status_code == 404
    assert theirs.headers["content-type"] == "application/problem+json"
    missing = await report(client, {"decision": decision, "item": "nope", "reason": "offensive"})
    assert missing.status_code == 404
    assert (await report(client, {"decision": "d", "item": "m1", "reason": "other"})).status_code == 404
    anonymous = await client.post(REPORTS, headers=JSON, content=b"{}")
    assert anonymous.status_code == 401
    assert sum(reported(registry, reason) for reason in REPORT_REASONS) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"decision": "d", "item": "m1", "reason": "spam"}, "reason"),
        ({"decision": "d", "item": "m1"}, "reason"),
        ({"item": "m1", "reason": "other"}, "decision"),
        ({"decision": "d", "item": 1, "reason": "other"}, "item"),
        ({"decision": "d", "item": "m1", "reason": "other", "note": "x" * 501}, "note"),
        ({"decision": "d", "item": "m1", "reason": "other", "user": "bob"}, "user"),
        (["not", "an", "object"], "(body)"),
    ],
)
async def test_a_bad_report_is_refused_naming_the_field(client: httpx.AsyncClient, body: Any, field: str) -> None:
    response = await report(client, body)
    assert response.status_code == 422
    problem = response.json()
    assert field in [error["field"] for error in problem["errors"]]
    assert problem["detail"].startswith("Nothing was reported.")


async def test_a_report_must_be_json(client: httpx.AsyncClient) -> None:
    assert (await report(client, b"{", **{"content-type": "text/plain"})).status_code == 415
    assert (await report(client, b"{")).status_code == 400
    assert (await report(client, b"{" + b" " * 5000 + b"}")).status_code == 413


async def test_reports_are_rate_limited_with_the_other_changes(client_for: ClientFactory) -> None:
    app = GuardrailMiddleware(
        Upstream(), policy=make_policy(controls_rate_limit="2/minute"), registry=CollectorRegistry()
    )
    client = client_for(app)
    await consent(client)
    decision = (await recommend(client))["guardrail"]["decision"]
    assert (await report(client, {"decision": decision, "item": "m1", "reason": "other"})).status_code == 201
    limited = await report(client, {"decision": decision, "item": "m2", "reason": "other"})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


async def test_the_why_page_reports_with_one_form(client: httpx.AsyncClient, registry: CollectorRegistry) -> None:
    await consent(client)
    link = kept(await recommend(client))["s1"]["explanation"]["why"]
    page = await client.get(link, headers=as_user())
    token = token_from(page.text)
    for reason in REPORT_REASONS:
        assert f'value="{reason}"' in page.text
    form = {"csrf": token, "do": "report", "reason": "not_for_me", "note": "  too many of these  "}
    done = await client.post(link, headers={**FORM, **as_user()}, data=form)
    assert done.status_code == 303
    after = await client.get(done.headers["location"], headers=as_user())
    assert "Thank you. We got your report." in after.text
    assert 'name="reason"' not in after.text  # reported: no second form
    exported = (await client.get("/guardrail/v1/export", headers=as_user())).json()
    assert [(r["item"], r["reason"], r["note"]) for r in exported["reports"]] == [
        ("s1", "not_for_me", "too many of these")
    ]
    assert reported(registry, "not_for_me") == 1


async def test_the_page_refuses_a_report_without_a_reason(client: httpx.AsyncClient) -> None:
    await consent(client)
    link = kept(await recommend(client))["s1"]["explanation"]["why"]
    token = token_from((await client.get(link, headers=as_user())).text)
    response = await client.post(link, headers={**FORM, **as_user()}, data={"csrf": token, "do": "report"})
    assert response.status_code == 422
    assert "reason" in response.text
    assert (await client.get("/guardrail/v1/export", headers=as_user())).json()["reports"] == []
