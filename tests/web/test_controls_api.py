"""The controls API (docs/architecture.md §6-§7) as an end user's app calls it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from guardrail.state import format_time

MERGE = {"content-type": "application/merge-patch+json"}


def as_user(user: str, **headers: str) -> dict[str, str]:
    return {"x-user-id": user, **headers}


async def send_patch(client: httpx.AsyncClient, body: Any, user: str = "alice", **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.patch("/guardrail/v1/controls", headers={**as_user(user), **MERGE, **headers}, content=content)


async def test_defaults_before_any_change(client: httpx.AsyncClient) -> None:
    response = await client.get("/guardrail/v1/controls", headers=as_user("alice"))
    assert response.status_code == 200
    assert response.headers["etag"] == '"0"'
    assert response.json() == {
        "user": "alice",
        "personalization": True,
        "consent": {},
        "signals": {},
        "muted": {},
        "sensitive": {},
        "locale": None,
        "paused_until": None,
        "revision": 0,
        "updated_at": None,
    }


async def test_merge_patch_merges_key_by_key(client: httpx.AsyncClient) -> None:
    first = await send_patch(client, {"signals": {"location_precise": False}, "muted": {"gambling": {"until": None}}})
    assert first.status_code == 200 and first.headers["etag"] == '"1"'
    until = format_time(datetime.now(UTC) + timedelta(days=30))
    second = await send_patch(
        client, {"signals": {"watch_history": False}, "muted": {"dating": {"until": until}}, "locale": "ko"}
    )
    body = second.json()
    assert body["signals"] == {"location_precise": False, "watch_history": False}
    assert body["muted"] == {"gambling": {"until": None}, "dating": {"until": until}}
    assert body["locale"] == "ko" and body["revision"] == 2
    assert body["updated_at"] is not None
    # null removes one key; a whole map set to null clears it
    third = await send_patch(client, {"muted": {"gambling": None}, "signals": None, "locale": None})
    assert third.json()["muted"] == {"dating": {"until": until}}
    assert third.json()["signals"] == {} and third.json()["locale"] is None
    assert (await client.get("/guardrail/v1/controls", headers=as_user("alice"))).json() == third.json()


async def test_if_match_guards_against_lost_updates(client: httpx.AsyncClient) -> None:
    await send_patch(client, {"personalization": False})
    stale = await send_patch(client, {"personalization": True}, **{"if-match": '"0"'})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.headers["etag"] == '"1"'
    assert "revision is 1" in stale.json()["detail"]
    fresh = await send_patch(client, {"personalization": True}, **{"if-match": '"1"'})
    assert fresh.status_code == 200 and fresh.json()["personalization"] is True
    assert (await send_patch(client, {}, **{"if-match": "*"})).status_code == 200
    assert (await send_patch(client, {}, **{"if-match": "garbage"})).status_code == 412


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"signals": {"telepathy": False}}, "signals.telepathy", "valid: location_precise, partner_data"),
        ({"muted": {"astrology": {"until": None}}}, "muted.astrology", "valid: dating, gambling, health"),
        ({"sensitive": {"movies": True}}, "sensitive.movies", "valid: dating, gambling, health, health.pregnancy"),
        ({"consent": {"personalization": "yes"}}, "consent.personalization", '"granted", "denied" or null'),
        ({"consent": {"marketing": "granted"}}, "consent.marketing", "valid: measurement, personalization, sharing"),
        ({"personalization": "off"}, "personalization", "true, false or null"),
        ({"signals": {"watch_history": 0}}, "signals.watch_history", "true, false or null"),
        ({"muted": {"gambling": {"until": "2001-01-01T00:00:00Z"}}}, "muted.gambling.until", "in the past"),
        ({"muted": {"gambling": {"until": "next week"}}}, "muted.gambling.until", "ISO 8601"),
        ({"muted": {"gambling": {"until": "2099-01-01T00:00:00"}}}, "muted.gambling.until", "with a zone"),
        ({"muted": {"gambling": True}}, "muted.gambling", '{"until": null} to mute'),
        ({"muted": ["gambling"]}, "muted", "must be an object"),
        ({"locale": "fr"}, "locale", "must be one of en, ko"),
        ({"revision": 99}, "revision", "read-only"),
        ({"colour": "blue"}, "colour", "valid fields: personalization, locale, consent"),
        ([1, 2], "(body)", "send a JSON object"),
    ],
)
async def test_invalid_changes_are_refused_naming_the_field(
    client: httpx.AsyncClient, body: Any, field: str, says: str
) -> None:
    response = await send_patch(client, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    errors = {error["field"]: error["message"] for error in problem["errors"]}
    assert field in errors, errors
    assert says in errors[field]
    assert says in problem["detail"]


@pytest.mark.parametrize(
    "until",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 once in UTC
        "9999-12-31T23:00:00-23:59",
        "0001-01-01T00:00:00Z",
    ],
)
async def test_a_snooze_end_out_of_range_is_a_422_naming_the_field(client: httpx.AsyncClient, until: str) -> None:
    response = await send_patch(client, {"muted": {"gambling": {"until": until}}})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    errors = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert list(errors) == ["muted.gambling.until"]


async def test_a_snooze_to_the_last_moment_there_is_is_kept(client: httpx.AsyncClient) -> None:
    response = await send_patch(client, {"muted": {"gambling": {"until": "9999-12-31T23:59:59+00:00"}}})
    assert response.status_code == 200
    assert response.json()["muted"] == {"gambling": {"until": "9999-12-31T23:59:59Z"}}
    assert (await client.get("/recommendations", headers=as_user("alice"))).status_code == 200


async def test_nothing_is_half_applied(client: httpx.AsyncClient) -> None:
    response = await send_patch(client, {"signals": {"watch_history": False}, "muted": {"astrology": {"until": None}}})
    assert response.status_code == 422
    state = (await client.get("/guardrail/v1/controls", headers=as_user("alice"))).json()
    assert state["signals"] == {} and state["revision"] == 0


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {}, 400),
        (b'{"a": 1}', {"content-type": "text/plain"}, 415),
        (b'{"signals": {}, "pad": "' + b"x" * 70_000 + b'"}', {}, 413),
    ],
)
async def test_malformed_requests(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], status: int
) -> None:
    response = await client.patch(
        "/guardrail/v1/controls", headers={**as_user("alice"), **MERGE, **headers}, content=content
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"]


async def test_plain_json_content_type_is_accepted_too(client: httpx.AsyncClient) -> None:
    response = await client.patch("/guardrail/v1/controls", headers=as_user("alice"), json={"personalization": False})
    assert response.status_code == 200


async def test_erase_forgets_controls_and_decisions(client: httpx.AsyncClient) -> None:
    await send_patch(client, {"consent": {"personalization": "granted"}})
    await client.get("/recommendations", headers=as_user("alice"))
    assert (await client.get("/guardrail/v1/decisions", headers=as_user("alice"))).json()["decisions"]
    response = await client.delete("/guardrail/v1/controls", headers=as_user("alice"))
    assert response.status_code == 204
    assert (await client.get("/guardrail/v1/controls", headers=as_user("alice"))).json()["revision"] == 0
    assert (await client.get("/guardrail/v1/decisions", headers=as_user("alice"))).json() == {"decisions": []}


async def test_users_see_only_their_own_data(client: httpx.AsyncClient) -> None:
    await send_patch(client, {"muted": {"gambling": {"until": None}}}, user="alice")
    await client.get("/recommendations", headers=as_user("alice"))
    decision = (await client.get("/guardrail/v1/decisions", headers=as_user("alice"))).json()["decisions"][0]
    bob = as_user("bob")
    assert (await client.get("/guardrail/v1/controls", headers=bob)).json()["muted"] == {}
    assert (await client.get("/guardrail/v1/decisions", headers=bob)).json() == {"decisions": []}
    response = await client.get(f"/guardrail/v1/decisions/{decision['decision']}", headers=bob)
    assert response.status_code == 404
    await client.delete("/guardrail/v1/controls", headers=bob)
    assert (await client.get("/guardrail/v1/controls", headers=as_user("alice"))).json()["muted"]


async def test_decision_receipt_explains_every_item(client: httpx.AsyncClient) -> None:
    await send_patch(client, {"consent": {"personalization": "granted"}, "muted": {"sports": {"until": None}}})
    response = await client.get("/recommendations", headers=as_user("alice"))
    decision_id = response.headers["guardrail-decision"]
    receipt = (await client.get(f"/guardrail/v1/decisions/{decision_id}", headers=as_user("alice"))).json()
    assert receipt["decision"] == decision_id
    assert receipt["kept"] == 2 and receipt["hidden"] == 4 and receipt["policy"] == "test-policy"
    by_id = {entry["id"]: entry for entry in receipt["items"]}
    assert by_id["m1"] == {
        "id": "m1",
        "action": "keep",
        "reasons": [],
        "because": ["watch_history"],
        "text": "You see this because of what you watched.",
    }
    assert by_id["s1"]["action"] == "hide" and by_id["s1"]["reasons"] == ["topic_muted"]
    assert by_id["s1"]["text"] == "Hidden because you chose to mute this topic."
    assert by_id["g1"]["reasons"] == ["sensitive_needs_opt_in"]
    listed = (await client.get("/guardrail/v1/decisions", headers=as_user("alice"))).json()["decisions"]
    assert listed[0]["decision"] == decision_id


async def test_a_snooze_ends_by_itself(client: httpx.AsyncClient) -> None:
    # The default upstream body has one non-personalized sports item, s1.
    until = datetime.now(UTC) + timedelta(seconds=1)
    response = await send_patch(client, {"muted": {"sports": {"until": until.isoformat()}}})
    assert response.status_code == 200
    first = (await client.get("/recommendations", headers=as_user("alice"))).json()
    assert "s1" not in [entry["id"] for entry in first["items"]]
    await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.05)
    second = (await client.get("/recommendations", headers=as_user("alice"))).json()
    assert "s1" in [entry["id"] for entry in second["items"]]
    assert (await client.get("/guardrail/v1/controls", headers=as_user("alice"))).json()["muted"] == {}


async def test_anonymous_callers_get_401_everywhere_private(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/guardrail/v1/controls"),
        ("PATCH", "/guardrail/v1/controls"),
        ("DELETE", "/guardrail/v1/controls"),
        ("GET", "/guardrail/v1/decisions"),
        ("GET", "/guardrail/v1/decisions/abc"),
    ]:
        response = await client.request(method, path, headers=MERGE, content=b"{}")
        assert response.status_code == 401, (method, path)
        assert response.headers["content-type"] == "application/problem+json"


async def test_health_and_unknown_paths(client: httpx.AsyncClient) -> None:
    assert (await client.get("/guardrail/healthz")).json() == {"status": "ok"}
    ready = await client.get("/guardrail/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "policy": "test-policy", "store": "ok"}
    missing = await client.get("/guardrail/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = await client.post("/guardrail/v1/controls", headers=as_user("alice"))
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET, PATCH, DELETE"
    assert wrong_method.headers["content-type"] == "application/problem+json"
