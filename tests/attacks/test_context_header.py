"""`Guardrail-Context` (docs/integrate.md): before the upstream runs, the guardrail tells it what it decided, as an
RFC 8941 dictionary, in place of anything the client sent under that name. A client must not be able to
hand the recommender a context of its own (say `personalized=?1` with nothing excluded), on any route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.context_header import context_header
from guardrail.engine import CompiledPolicy, RequestSignals, UserContext
from guardrail.state import UserState
from tests.conftest import BASE_POLICY, ClientFactory, make_policy
from tests.sidecar.conftest import StartSidecar
from tests.sidecar.servers import RecordingUpstream
from tests.upstream import Upstream

# Every purpose denied until the user says yes: a user who never did is not personalized at all.
ALL_DENIED = {name: {**purpose, "default": "denied"} for name, purpose in BASE_POLICY["purposes"].items()}
FORGED = {"guardrail-context": 'personalized=?1, signals=("location_precise"), exclude=(), locale="en"'}
SNOOZE_END = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
# Consented, with a signal off, a topic muted, another snoozed, and one sensitive category opted into.
ALICE_CONTROLS = {
    "consent": {"personalization": "granted"},
    "signals": {"search_history": False},
    "muted": {"movies.horror": {"until": None}, "sports": {"until": SNOOZE_END}},
    "sensitive": {"health": True},
    "locale": "ko",
}
# `search_history` is off and the `sharing` and `measurement` purposes are denied; `gambling` and `dating`
# are sensitive and not opted into (`health` is, and covers `health.pregnancy`).
ALICE_CONTEXT = (
    "personalized=?1, "
    'signals=("location_precise" "partner_data" "watch_history"), '
    'exclude=("dating" "gambling" "movies.horror" "sports"), '
    'locale="ko"'
)
NOT_PERSONALIZED = "personalized=?0"


async def set_controls(client: httpx.AsyncClient, user: str, controls: dict[str, Any]) -> None:
    response = await client.patch(
        "/guardrail/v1/controls",
        content=orjson.dumps(controls),
        headers={"x-user-id": user, "content-type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text


def contexts_seen(app: Upstream) -> list[str]:
    return [value.decode("latin-1") for name, value in app.seen[-1]["headers"] if name == b"guardrail-context"]


@pytest.fixture
async def middleware_client(client_for: ClientFactory) -> tuple[httpx.AsyncClient, Upstream]:
    app = Upstream()
    middleware = GuardrailMiddleware(app, policy=make_policy(purposes=ALL_DENIED), registry=CollectorRegistry())
    client = client_for(middleware)
    await set_controls(client, "alice", ALICE_CONTROLS)
    return client, app


@pytest.mark.parametrize("forged", [{}, FORGED], ids=["none-sent", "forged-one-sent"])
async def test_the_app_gets_what_was_decided_for_a_consented_user(
    middleware_client: tuple[httpx.AsyncClient, Upstream], forged: dict[str, str]
) -> None:
    client, app = middleware_client
    await client.get("/recommendations", headers={"x-user-id": "alice", **forged})
    assert app.seen[-1]["path"] == "/recommendations"
    assert contexts_seen(app) == [ALICE_CONTEXT]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-user-id": "bob"}, id="never-consented"),
        pytest.param({}, id="anonymous"),
        pytest.param({"x-user-id": "alice", "x-user-age": "12"}, id="a-minor"),
        pytest.param({"x-user-id": "bob", **FORGED}, id="never-consented-forging"),
    ],
)
async def test_a_non_personalized_request_carries_nothing_personal(
    middleware_client: tuple[httpx.AsyncClient, Upstream], headers: dict[str, str]
) -> None:
    client, app = middleware_client
    await client.get("/recommendations", headers=headers)
    assert app.seen[-1]["path"] == "/recommendations/popular"
    assert contexts_seen(app) == [NOT_PERSONALIZED]


async def test_a_guarded_route_without_a_non_personalized_one_gets_the_context_too(
    middleware_client: tuple[httpx.AsyncClient, Upstream],
) -> None:
    client, app = middleware_client
    await client.get("/feed/anything", headers={"x-user-id": "alice", **FORGED})
    assert contexts_seen(app) == [ALICE_CONTEXT]
    await client.get("/feed/anything", headers={"x-user-id": "bob", **FORGED})
    assert contexts_seen(app) == [NOT_PERSONALIZED]


@pytest.mark.parametrize("path", ["/anything", "/recommendations/popular"])
async def test_a_forged_context_never_reaches_an_unguarded_route(
    middleware_client: tuple[httpx.AsyncClient, Upstream], path: str
) -> None:
    client, app = middleware_client
    await client.get(path, headers={"x-user-id": "alice", **FORGED})
    assert contexts_seen(app) == []


async def test_the_sidecar_sends_the_upstream_what_was_decided(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar(purposes=ALL_DENIED)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        await set_controls(client, "alice", ALICE_CONTROLS)
        await client.get("/recommendations", headers={"x-user-id": "alice", **FORGED})
        assert upstream.seen[-1].header("guardrail-context") == [ALICE_CONTEXT]

        await client.get("/recommendations", headers={"x-user-id": "bob", **FORGED})
        assert upstream.seen[-1].path == "/recommendations/popular"
        assert upstream.seen[-1].header("guardrail-context") == [NOT_PERSONALIZED]

        await client.get("/anything", headers={"x-user-id": "alice", **FORGED})
        assert upstream.seen[-1].header("guardrail-context") == []


def test_what_is_not_an_sf_string_is_escaped_or_left_out() -> None:
    # Policy ids are always plain ASCII; a mute kept in the store from another policy need not be.
    policy = make_policy(purposes=ALL_DENIED, categories={})
    state = UserState(consent={"personalization": "granted"}, muted={'say "hi"': None, "back\\slash": None})
    ctx = UserContext(CompiledPolicy(policy), state, RequestSignals(), locale="en", now=datetime.now(UTC))
    ctx.muted = frozenset({*ctx.muted, "caf\u00e9", "tab\there"})
    assert context_header(ctx) == (
        b"personalized=?1, "
        b'signals=("location_precise" "partner_data" "search_history" "watch_history"), '
        b'exclude=("back\\\\slash" "say \\"hi\\""), '
        b'locale="en"'
    )
