"""TC strings on requests, with the TCF rules applied (issue 6): the test policy maps `personalization`
to TCF purposes 5 and 6 and `sharing` to 3 and 4; `measurement` is not covered by TCF."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.consent.tcf_policy import TcfReader
from tests.conftest import BASE_POLICY, ClientFactory, make_policy
from tests.consent.test_tcf import Vendors, core
from tests.upstream import Upstream, item

ALL_GRANTED = {"consent": {"personalization": "granted", "sharing": "granted", "measurement": "granted"}}
ITEMS = {
    "items": [
        item("w", ["movies"], ["watch_history"]),  # personalization
        item("s", ["movies"], ["shared_segments"]),  # sharing
        item("p", ["movies"], ["play_count"]),  # measurement: not a TCF purpose here
        item("n", ["movies"], []),
    ]
}


def tc(*, purposes: tuple[int, ...] = (1, 3, 4, 5, 6), interests: tuple[int, ...] = (), **fields: Any) -> str:
    return core(Vendors(20, frozenset({1, 7})), purpose_consents=purposes, purpose_interests=interests, **fields)


async def shown(client: httpx.AsyncClient, **headers: str) -> list[str]:
    response = await client.get("/recommendations", headers={"x-user-id": "alice", **headers})
    return [entry["id"] for entry in response.json()["items"]]


@pytest.fixture
async def client(client_for: ClientFactory) -> httpx.AsyncClient:
    middleware = GuardrailMiddleware(Upstream(body=ITEMS), policy=make_policy(), registry=CollectorRegistry())
    client = client_for(middleware)
    response = await client.patch(
        "/guardrail/v1/controls",
        headers={"x-user-id": "alice", "content-type": "application/merge-patch+json"},
        content=orjson.dumps(ALL_GRANTED),
    )
    assert response.status_code == 200
    return client


@pytest.mark.parametrize(
    ("string", "expected"),
    [
        pytest.param(None, ["w", "s", "p", "n"], id="no-tc-string-stored-consent-decides"),
        pytest.param(tc(), ["w", "s", "p", "n"], id="all-consented"),
        pytest.param(tc(purposes=(1, 3, 4)), ["s", "p", "n"], id="tc-refuses-personalization-over-stored-grant"),
        pytest.param(
            tc(purposes=(1,), interests=(3, 4, 5, 6)), ["p", "n"], id="purposes-3-to-6-never-on-legitimate-interest"
        ),
        pytest.param(
            tc(policy_version=2, created=datetime(2024, 1, 5, tzinfo=UTC)),
            ["p", "n"],
            id="v2-after-2023-09-30-is-no-consent",
        ),
        pytest.param(
            tc(policy_version=2, created=datetime(2023, 5, 1, tzinfo=UTC)),
            ["w", "s", "p", "n"],
            id="v2-before-the-cutoff-counts",
        ),
        pytest.param("CPgarbage!!", ["p", "n"], id="malformed-is-never-consent"),
        pytest.param(tc()[:30], ["p", "n"], id="truncated-is-never-consent"),
    ],
)
async def test_the_tc_string_decides_its_purposes(
    client: httpx.AsyncClient, string: str | None, expected: list[str]
) -> None:
    headers = {"cookie": f"theme=dark; euconsent-v2={string}"} if string is not None else {}
    assert await shown(client, **headers) == expected


async def test_a_tcf_denial_is_explained(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/recommendations", headers={"x-user-id": "alice", "cookie": f"euconsent-v2={tc(purposes=(1,))}"}
    )
    decision = response.headers["guardrail-decision"]
    receipt = await client.get(f"/guardrail/v1/decisions/{decision}", headers={"x-user-id": "alice"})
    reasons = {entry["id"]: entry["reasons"] for entry in receipt.json()["items"]}
    assert reasons["w"] == ["tcf_no_consent"]
    assert reasons["s"] == ["tcf_no_consent"]


async def test_the_policy_can_name_its_vendor_id_header_and_query(client_for: ClientFactory) -> None:
    tcf = {"cookie": None, "header": "x-tc-string", "query": "gdpr_consent", "vendor_id": 7}
    policy = make_policy(tcf=tcf)
    registry = CollectorRegistry()
    client = client_for(GuardrailMiddleware(Upstream(body=ITEMS), policy=policy, registry=registry))
    await client.patch(
        "/guardrail/v1/controls",
        headers={"x-user-id": "alice", "content-type": "application/merge-patch+json"},
        content=orjson.dumps(ALL_GRANTED),
    )
    consented = tc()  # vendor 7 has consent
    refused = core(Vendors(20, frozenset({1})), purpose_consents=(1, 3, 4, 5, 6))  # vendor 7 has not
    assert await shown(client, **{"x-tc-string": consented}) == ["w", "s", "p", "n"]
    assert await shown(client, **{"x-tc-string": refused}) == ["p", "n"]
    response = await client.get(f"/recommendations?gdpr_consent={refused}", headers={"x-user-id": "alice"})
    assert [entry["id"] for entry in response.json()["items"]] == ["p", "n"]
    # The cookie is not a source in this policy.
    assert await shown(client, cookie=f"euconsent-v2={refused}") == ["w", "s", "p", "n"]
    assert registry.get_sample_value("guardrail_tc_strings_total", {"result": "vendor_refused"}) == 1
    assert registry.get_sample_value("guardrail_tc_strings_total", {"result": "valid"}) == 1


def test_verdicts_are_cached_per_string() -> None:
    seen: list[str] = []
    reader = TcfReader(make_policy(), count=seen.append)
    string = tc()
    assert reader.verdict(string) == frozenset({("personalization", True), ("sharing", True)})
    assert reader.verdict(string) is reader.verdict(string)
    assert seen == ["valid"]
    assert reader.verdict("garbage") == frozenset({("personalization", False), ("sharing", False)})
    assert seen == ["valid", "invalid"]


def test_a_policy_without_tcf_purposes_ignores_tc_strings() -> None:
    purposes = {
        name: {k: v for k, v in p.items() if k != "tcf_purposes"} for name, p in BASE_POLICY["purposes"].items()
    }
    reader = TcfReader(make_policy(purposes=purposes))
    assert reader.verdict(tc()) is None
