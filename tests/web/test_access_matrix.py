"""Nobody reads or changes anybody else's controls or decisions (issue 4): every caller, every
endpoint, every method, including spoofed identity headers from untrusted peers."""

from __future__ import annotations

import itertools

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from tests.conftest import ClientFactory, make_policy
from tests.upstream import Upstream

MERGE = {"content-type": "application/merge-patch+json"}
METHODS = ["GET", "PATCH", "DELETE", "POST", "PUT"]


async def setup_users(client: httpx.AsyncClient) -> dict[str, str]:
    """alice and bob each have controls and one decision; returns each one's decision id."""
    decisions = {}
    for user, topic in (("alice", "gambling"), ("bob", "dating")):
        body = {"consent": {"personalization": "granted"}, "muted": {topic: {"until": None}}}
        response = await client.patch(
            "/guardrail/v1/controls", headers={"x-user-id": user, **MERGE}, content=orjson.dumps(body)
        )
        assert response.status_code == 200
        recs = await client.get("/recommendations", headers={"x-user-id": user})
        decisions[user] = recs.headers["guardrail-decision"]
    return decisions


async def snapshot(client: httpx.AsyncClient, user: str) -> tuple[dict[str, object], list[str]]:
    controls = (await client.get("/guardrail/v1/controls", headers={"x-user-id": user})).json()
    listed = (await client.get("/guardrail/v1/decisions", headers={"x-user-id": user})).json()["decisions"]
    return controls, [d["decision"] for d in listed]


@pytest.mark.parametrize(
    ("caller", "peer"),
    [("bob", "127.0.0.1"), ("alice-spoofed", "203.0.113.9"), ("anonymous", "127.0.0.1")],
)
async def test_nobody_reaches_alices_data(client_for: ClientFactory, caller: str, peer: str) -> None:
    middleware = GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry())
    trusted = client_for(middleware)
    decisions = await setup_users(trusted)
    alice_before = await snapshot(trusted, "alice")

    actor = client_for(middleware, peer)
    headers = {} if caller == "anonymous" else {"x-user-id": "alice" if caller == "alice-spoofed" else caller}
    paths = [
        "/guardrail/v1/controls",
        "/guardrail/v1/decisions",
        f"/guardrail/v1/decisions/{decisions['alice']}",
    ]
    for path, method in itertools.product(paths, METHODS):
        response = await actor.request(
            method, path, headers={**headers, **MERGE}, content=b'{"muted": null, "personalization": false}'
        )
        assert response.status_code < 500, (method, path, response.text)
        if response.status_code != 204:
            assert response.headers["content-type"].startswith(("application/json", "application/problem+json"))
        text = response.text
        # Nothing of alice's shows up in what the caller gets back.
        assert "gambling" not in text, (method, path, text)
        assert decisions["alice"] not in text or response.status_code == 404, (method, path, text)
        if caller != "bob":
            assert response.status_code in (401, 405), (method, path, response.status_code)
        elif path.endswith(decisions["alice"]):
            assert response.status_code in (404, 405), (method, path, response.status_code)

    # alice's controls and decisions are exactly as they were.
    assert await snapshot(trusted, "alice") == alice_before
