"""Taking a break (issue 18, point 3): `paused_until` in the controls, the engine, the guarded route and the page.

A pause is personalization off until a moment: the non-personalized route is asked (no identity), the
explanations and the notice say until when, and it ends by itself.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.engine import Action, ItemDecision, Reason, RequestSignals, decide
from guardrail.explain.render import Notices
from guardrail.guard import Guard
from guardrail.state import UserState, format_time
from tests.conftest import ClientFactory, make_policy
from tests.engine.support import COMPILED, CONSENTED, NOW, context
from tests.upstream import Upstream, item
from tests.web.test_page import FORM, PAGE, as_user, page_token

MERGE = {"content-type": "application/merge-patch+json"}
CONTROLS = "/guardrail/v1/controls"
PAUSE = f"{PAGE}/pause"


def paused(until: datetime, **changes: Any) -> UserState:
    return UserState(consent={"personalization": "granted"}, paused_until=until, **changes)


async def send_patch(client: httpx.AsyncClient, body: Any, user: str = "alice") -> httpx.Response:
    return await client.patch(CONTROLS, headers={**as_user(user), **MERGE}, content=orjson.dumps(body))


async def get_controls(client: httpx.AsyncClient, user: str = "alice") -> dict[str, Any]:
    data: dict[str, Any] = (await client.get(CONTROLS, headers=as_user(user))).json()
    return data


def in_(**delta: float) -> str:
    return format_time(datetime.now(UTC) + timedelta(**delta)) or ""


@pytest.fixture
def client(client_for: ClientFactory) -> httpx.AsyncClient:
    return client_for(GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry()))


# -- the API -------------------------------------------------------------------------------------


async def test_a_pause_is_set_read_and_resumed_through_the_api(client: httpx.AsyncClient) -> None:
    assert (await get_controls(client))["paused_until"] is None
    until = in_(days=7)
    response = await send_patch(client, {"paused_until": until})
    assert response.status_code == 200, response.text
    assert response.json()["paused_until"] == until
    assert (await get_controls(client))["paused_until"] == until
    # Other controls are untouched by a pause, and a pause by them.
    assert (await send_patch(client, {"signals": {"location_precise": False}})).json()["paused_until"] == until
    resumed = await send_patch(client, {"paused_until": None})
    assert resumed.status_code == 200
    assert resumed.json()["paused_until"] is None
    assert (await get_controls(client))["signals"] == {"location_precise": False}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        pytest.param("2001-01-01T00:00:00Z", "is in the past; a pause must end in the future", id="past"),
        pytest.param("far", "must be an ISO 8601 time with a zone", id="not-a-time"),
        pytest.param("2026-12-26T00:00:00", "must be an ISO 8601 time with a zone", id="naive"),
        pytest.param(7, "must be an ISO 8601 time with a zone", id="number"),
        pytest.param({"until": None}, "must be an ISO 8601 time with a zone", id="object"),
        pytest.param("9999-12-31T23:59:59-01:00", "is out of range", id="out-of-range"),
    ],
)
async def test_a_bad_pause_is_refused_naming_the_field(client: httpx.AsyncClient, value: Any, says: str) -> None:
    response = await send_patch(client, {"paused_until": value})
    assert response.status_code == 422
    errors = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert says in errors["paused_until"], errors
    assert (await get_controls(client))["revision"] == 0


async def test_a_pause_ends_within_90_days(client: httpx.AsyncClient) -> None:
    assert (await send_patch(client, {"paused_until": in_(days=89)})).status_code == 200
    response = await send_patch(client, {"paused_until": in_(days=91)})
    assert response.status_code == 422
    errors = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert "is too far ahead; a pause ends within 90 days" in errors["paused_until"]


# -- ending by itself ----------------------------------------------------------------------------


def test_a_pause_in_the_past_reads_as_not_paused() -> None:
    ended = paused(NOW - timedelta(seconds=1))
    assert ended.pause_end(NOW) is None
    assert ended.to_json("alice", NOW)["paused_until"] is None
    ctx = context(ended)
    assert ctx.paused_until is None and ctx.personalized_allowed
    assert ctx.valid_until == float("inf")
    assert not decide(ctx, ["movies"], ["watch_history"]).hidden


def test_during_a_pause_the_user_is_as_with_personalization_off() -> None:
    until = NOW + timedelta(days=1)
    ctx = context(paused(until))
    off = context(UserState(consent={"personalization": "granted"}, personalization=False))
    assert ctx.paused_until == until
    assert not ctx.personalized_allowed
    assert ctx.signal_reasons == off.signal_reasons
    assert decide(ctx, ["movies"], ["watch_history"]).reasons == (Reason.PERSONALIZATION_OFF,)
    assert paused(until).to_json("alice", NOW)["paused_until"] == "2026-11-27T09:00:00Z"


def test_a_context_built_during_a_pause_stops_at_its_end() -> None:
    until = NOW + timedelta(hours=2)
    assert context(paused(until)).valid_until == until.timestamp()
    # An earlier snooze still ends the context first; a later one does not.
    snooze = NOW + timedelta(hours=1)
    assert context(paused(until, muted={"sports": snooze})).valid_until == snooze.timestamp()
    assert context(paused(until, muted={"sports": until + timedelta(hours=1)})).valid_until == until.timestamp()


def test_no_pause_when_the_store_could_not_be_read_or_for_anonymous_callers() -> None:
    assert context(paused(NOW + timedelta(days=1)), store_unavailable=True).paused_until is None
    assert context(None).paused_until is None


async def test_the_guard_rebuilds_a_paused_context_once_the_pause_ends() -> None:
    guard = Guard(make_policy())
    state = paused(datetime.now(UTC) + timedelta(seconds=1))
    first, _ = guard.context("alice", state, RequestSignals(), None)
    assert not first.personalized_allowed
    assert guard.context("alice", state, RequestSignals(), None)[0] is first  # cached while the pause lasts
    await asyncio.sleep(max(0.0, first.valid_until - time.time()) + 0.05)
    after, _ = guard.context("alice", state, RequestSignals(), None)
    assert after is not first
    assert after.paused_until is None and after.personalized_allowed


def test_paused_and_not_paused_users_do_not_share_a_context() -> None:
    guard = Guard(make_policy())
    shared, _ = guard.context("bob", CONSENTED, RequestSignals(), None)
    pausing, _ = guard.context("carol", paused(datetime.now(UTC) + timedelta(days=1)), RequestSignals(), None)
    assert shared.personalized_allowed and not pausing.personalized_allowed


# -- what the user reads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en", "We hid 2 suggestions because you paused personal picks until 2026-11-27 09:00 UTC."),
        ("ko", "2026-11-27 09:00 UTC까지 맞춤 추천을 멈추셔서 추천 2개를 숨겼어요."),
    ],
)
def test_the_notice_says_until_when(locale: str, expected: str) -> None:
    ctx = context(paused(NOW + timedelta(days=1)), locale=locale)
    hidden = [decide(ctx, ["movies"], ["watch_history"]), decide(ctx, ["sports"], ["search_history"])]
    assert Notices(COMPILED)(locale, hidden, ctx.paused_until) == expected
    # Personalization off without a pause keeps its own sentence.
    assert Notices(COMPILED)(locale, hidden) != expected


def test_a_mixed_notice_during_a_pause_stays_mixed() -> None:
    mixed = [
        ItemDecision(Action.HIDE, (Reason.PERSONALIZATION_OFF,), 0, ("watch_history",), None),
        ItemDecision(Action.HIDE, (Reason.TOPIC_MUTED,), 0, (), None, muted_topic="sports"),
    ]
    assert Notices(COMPILED)("en", mixed, NOW) == "We hid 2 suggestions. Your controls show why."


def test_explanations_during_a_pause_say_until_when() -> None:
    ctx = context(paused(NOW + timedelta(days=1)))
    kept = decide(ctx, ["movies"], [])
    assert kept.explanation is not None
    assert kept.explanation["text"] == (
        "Popular with many people right now. Personal suggestions are paused until 2026-11-27 09:00 UTC."
    )
    ko = decide(context(paused(NOW + timedelta(days=1)), locale="ko"), ["movies"], [])
    assert ko.explanation is not None and "2026-11-27 09:00 UTC까지 맞춤 추천을 멈췄어요." in ko.explanation["text"]


# -- the guarded route ---------------------------------------------------------------------------


async def test_the_guarded_route_goes_non_personalized_during_a_pause(client_for: ClientFactory) -> None:
    upstream = Upstream(body={"items": [item("a", ["movies"], []), item("b", ["movies"], ["watch_history"])]})
    client = client_for(GuardrailMiddleware(upstream, policy=make_policy(), registry=CollectorRegistry()))
    assert (await send_patch(client, {"consent": {"personalization": "granted"}})).status_code == 200
    await client.get("/recommendations", headers={**as_user(), "cookie": "session=1"})
    assert upstream.seen[-1]["path"] == "/recommendations"

    until = in_(days=1)
    assert (await send_patch(client, {"paused_until": until})).status_code == 200
    response = await client.get("/recommendations", headers={**as_user(), "cookie": "session=1"})
    assert upstream.seen[-1]["path"] == "/recommendations/popular"
    headers = upstream.headers_seen()
    assert "x-user-id" not in headers and "cookie" not in headers
    body = response.json()
    assert [entry["id"] for entry in body["items"]] == ["a"]
    shown = datetime.fromisoformat(until).strftime("%Y-%m-%d %H:%M UTC")
    assert body["items"][0]["explanation"]["text"].endswith(f"Personal suggestions are paused until {shown}.")
    assert body["guardrail"]["notice"] == f"We hid 1 suggestion because you paused personal picks until {shown}."

    assert (await send_patch(client, {"paused_until": None})).status_code == 200
    await client.get("/recommendations", headers=as_user())
    assert upstream.seen[-1]["path"] == "/recommendations"
    assert upstream.headers_seen()["x-user-id"] == "alice"


# -- the page ------------------------------------------------------------------------------------


async def post_pause(client: httpx.AsyncClient, form: dict[str, str], user: str = "alice") -> httpx.Response:
    return await client.post(PAUSE, headers={**FORM, **as_user(user)}, data=form)


async def test_the_page_offers_a_break_in_a_labelled_fieldset(client: httpx.AsyncClient) -> None:
    page = (await client.get(PAGE, headers=as_user())).text
    assert f'<form method="post" action="{PAUSE}">' in page
    assert "<legend>Take a break</legend>" in page
    for days, label in (("1", "Pause for 1 day"), ("7", "Pause for 7 days"), ("30", "Pause for 30 days")):
        assert f'<button type="submit" name="pause" value="{days}" aria-describedby="pause-help">{label}</button>' in (
            page
        )
    assert "Resume now" not in page  # nothing to resume yet


@pytest.mark.parametrize("days", [1, 7, 30])
async def test_a_pause_button_pauses_and_resume_now_resumes(client: httpx.AsyncClient, days: int) -> None:
    token = await page_token(client)
    before = datetime.now(UTC).replace(microsecond=0)
    response = await post_pause(client, {"csrf": token, "pause": str(days)})
    assert response.status_code == 303
    assert response.headers["location"] == f"{PAGE}?saved=1"
    until = (await get_controls(client))["paused_until"]
    assert until is not None
    assert before + timedelta(days=days) <= datetime.fromisoformat(until) <= datetime.now(UTC) + timedelta(days=days)

    page = (await client.get(PAGE, headers=as_user())).text
    shown = datetime.fromisoformat(until).strftime("%Y-%m-%d %H:%M UTC")
    assert f'<time datetime="{until}">Personal suggestions are paused until {shown}.</time>' in page
    assert '<button type="submit" name="pause" value="resume" aria-describedby="pause-status">Resume now</button>' in (
        page
    )

    assert (await post_pause(client, {"csrf": token, "pause": "resume"})).status_code == 303
    assert (await get_controls(client))["paused_until"] is None
    assert "Resume now" not in (await client.get(PAGE, headers=as_user())).text


async def test_the_page_is_korean_for_korean_readers(client: httpx.AsyncClient) -> None:
    page = (await client.get(PAGE, headers=as_user(**{"accept-language": "ko"}))).text
    assert "<legend>잠시 쉬기</legend>" in page and "7일 동안 멈추기" in page


async def test_a_pause_needs_the_token_and_a_known_choice(client: httpx.AsyncClient) -> None:
    token = await page_token(client)
    for form in (
        {"pause": "7"},
        {"csrf": "0" * 64, "pause": "7"},
        {"csrf": await page_token(client, "eve"), "pause": "7"},
    ):
        assert (await post_pause(client, form)).status_code == 403
    for choice in ("", "2", "365", "forever", "7.5"):
        response = await post_pause(client, {"csrf": token, "pause": choice})
        assert response.status_code == 422
        assert "must be one of 1, 7, 30 or resume" in response.text
    assert (await get_controls(client))["revision"] == 0
    assert (await client.post(PAUSE, headers={**FORM}, data={"csrf": token, "pause": "7"})).status_code == 401


async def test_pausing_is_rate_limited_like_the_form(client_for: ClientFactory) -> None:
    policy = make_policy(controls_rate_limit="2/minute")
    client = client_for(GuardrailMiddleware(Upstream(), policy=policy, registry=CollectorRegistry()))
    token = await page_token(client)
    for choice in ("7", "resume"):
        assert (await post_pause(client, {"csrf": token, "pause": choice})).status_code == 303
    response = await post_pause(client, {"csrf": token, "pause": "1"})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert (await get_controls(client))["paused_until"] is None
