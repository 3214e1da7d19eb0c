"""`InProcess` and `GuardedJSONResponse` as a service uses them: routes, its own items, odd pages."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail import GuardedJSONResponse, GuardrailMiddleware, InProcess
from guardrail.context_header import parse_guardrail_context
from guardrail.engine import BadItem
from tests.conftest import ClientFactory, make_policy
from tests.upstream import DEFAULT_ITEMS, Upstream, http_scope, item

ALICE = [(b"x-user-id", b"alice")]


def in_process(upstream: Any = None, **policy: Any) -> InProcess:
    return InProcess(
        GuardrailMiddleware(upstream or Upstream(), policy=make_policy(**policy), registry=CollectorRegistry())
    )


async def test_an_unknown_route_names_the_routes_there_are() -> None:
    with pytest.raises(LookupError, match=r"'/recomendations'.*/feed/\*, /list, /recommendations"):
        await in_process().check(http_scope("/x", headers=ALICE), DEFAULT_ITEMS, route="/recomendations")


async def test_the_kept_items_get_their_explanation_in_enforce_mode_only() -> None:
    given = copy.deepcopy(DEFAULT_ITEMS)
    checked = await in_process().check(http_scope("/", headers=ALICE), given, route="/list")
    assert checked.items and all(any(kept is mine for mine in given) for kept in checked.items)
    decision = checked.summary["decision"]
    assert all(
        kept["explanation"] == {**(verdict.explanation or {}), "why": f"/guardrail/why/{decision}/{kept['id']}"}
        for kept, verdict in zip(
            checked.items, [verdict for verdict in checked.decisions if not verdict.hidden], strict=True
        )
    )
    assert all("explanation" not in mine for mine in given if not any(mine is kept for kept in checked.items))

    given = copy.deepcopy(DEFAULT_ITEMS)
    shadow = await in_process(mode="shadow").check(http_scope("/", headers=ALICE), given, route="/list")
    assert shadow.items == given == DEFAULT_ITEMS


async def test_a_malformed_item_is_named() -> None:
    with pytest.raises(BadItem, match="item 1"):
        await in_process().check(http_scope("/", headers=ALICE), [item("a", []), {"categories": []}], route="/list")


async def test_non_personalized_route_is_stricter_in_process() -> None:
    """Behind the middleware, a user without personal picks is sent to `non_personalized.rewrite_to`
    without identity, so items that name no signals rely on none. In process the service has the
    identity: such items use the route's default signals, and are hidden without consent."""
    unnamed = [item("p1", ["sports"])]  # no `signals`: the route's default, watch_history
    checked = await in_process().check(http_scope("/", headers=ALICE), unnamed, route="/recommendations")
    assert checked.items == []
    assert checked.decisions[0].reasons[0] == "no_consent"


async def test_context_is_what_the_middleware_tells_the_app(client_for: ClientFactory) -> None:
    told: list[bytes] = []
    gr: InProcess | None = None

    async def endpoint(request: Request) -> Response:
        assert gr is not None
        told.append(request.headers["guardrail-context"].encode())
        behind = await gr.context(request)
        alone = await gr.context({**http_scope("/recommendations", headers=ALICE), "headers": ALICE})
        assert behind == alone == parse_guardrail_context(told[-1])
        return Response(b'{"data":{"items":[]}}', media_type="application/json")

    middleware = GuardrailMiddleware(
        Starlette(routes=[Route("/feed/x", endpoint)]), policy=make_policy(), registry=CollectorRegistry()
    )
    gr = InProcess(middleware)
    response = await client_for(middleware).get("/feed/x", headers={"x-user-id": "alice"})
    assert response.status_code == 200 and told


async def test_the_response_keeps_integers_beyond_64_bits_exact() -> None:
    big = 2**70
    checked = await in_process(unknown_categories="keep").check(
        http_scope("/"), [item(str(big), []), {"id": big, "categories": []}], route="/list"
    )
    body = GuardedJSONResponse(checked).body
    assert str(big).encode() + b',"categories"' in body
    assert orjson.loads(body)["guardrail"]["kept"] == 2


def test_extra_may_not_say_what_the_checked_page_says() -> None:
    checked = asyncio.run(in_process().check(http_scope("/"), [], route="/list"))
    with pytest.raises(ValueError, match="guardrail"):
        GuardedJSONResponse(checked, extra={"guardrail": {}})
    response = GuardedJSONResponse(checked, key="data", extra={"page": 2}, status_code=203)
    assert response.status_code == 203
    assert list(orjson.loads(response.body)) == ["data", "page", "guardrail"]
    assert response.headers["cache-control"] == "private, no-store"
    assert response.media_type == "application/json"
