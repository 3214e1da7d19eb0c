"""`InProcess.check` on Python items says what the middleware says on the same items as JSON (issue 16).

For policies, users (or nobody), stored controls, request signals, modes and pages drawn by the property-test
generator (tests/strategies.py), three ways to check one page agree: the middleware on an upstream's JSON
body; `check` on the items as Python objects, called with the request's scope; and an app behind the
middleware that calls `check` and answers with a `GuardedJSONResponse`. The same kept items with the same
explanations, the same summary, the same headers (decision ids aside), the same decisions recorded, the
same counts in the metrics; and the same bytes of the page.
"""

from __future__ import annotations

import copy
import re
import socket
from typing import Any

import httpx
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail import GuardedJSONResponse, GuardrailMiddleware, InProcess, MemoryStore, Policy, StoreError, UserState
from guardrail.policy.models import Identity
from guardrail.store import Store, create_store
from tests.strategies import examples, items, policies, states
from tests.upstream import Upstream, http_scope

ROUTE = "/recommendations"
USER = "alice"
# What a page says besides its items: the middleware keeps it, `GuardedJSONResponse` writes it as `extra`.
EXTRA = {"page": 1, "model": "two-tower"}
COUNTED = (
    "guardrail_requests_total",
    "guardrail_items_total",
    "guardrail_hidden_items_total",
    "guardrail_unknown_categories_total",
    "guardrail_fail_mode_total",
)
_WHY_DECISION = re.compile(rb"/why/[0-9a-f]+/")
_DECISION_ID = re.compile(rb'"decision":"[0-9a-f]+"')


def served(policy: Policy, mode: str, fail_mode: str = "closed") -> Policy:
    """`policy` in `mode`, the caller named by `x-user-id` (age in `x-user-age`), and routes without a
    non-personalized rewrite (in process the route's default signals always apply: see
    test_non_personalized_route_is_stricter_in_process)."""
    routes = [route.model_copy(update={"non_personalized": None}) for route in policy.routes]
    identity = Identity(source="header", header="x-user-id", age_header="x-user-age")
    return policy.model_copy(update={"mode": mode, "fail_mode": fail_mode, "identity": identity, "routes": routes})


def seeded(state: UserState | None) -> MemoryStore:
    store = MemoryStore()
    if state is not None:
        store._states[USER] = state  # the state as drawn, with no patch to spell it out
    return store


def request_headers(user: bool, gpc: bool, age: int | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"accept-language", b"ko-KR, en;q=0.5")]
    if user:
        headers.append((b"x-user-id", USER.encode()))
    if gpc:
        headers.append((b"sec-gpc", b"1"))
    if age is not None:
        headers.append((b"x-user-age", str(age).encode()))
    return headers


def counts(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name in COUNTED
    }


def guardrail_headers(headers: httpx.Headers | dict[str, str]) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower().startswith("guardrail-") or name.lower() == "cache-control"
    }


def without_ids(value: Any) -> Any:
    """A page, summary or headers with the decision id blanked (also in each `why` link): each way of checking
    makes its own."""
    if isinstance(value, bytes):
        return _WHY_DECISION.sub(b"/why/-/", _DECISION_ID.sub(b'"decision":"-"', value))
    if isinstance(value, str):
        return _WHY_DECISION.sub(b"/why/-/", value.encode()).decode()
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    if isinstance(value, dict):
        return {k: "-" if k in ("decision", "guardrail-decision") else without_ids(v) for k, v in value.items()}
    return value


async def through_middleware(policy: Policy, store: Store, headers: list[tuple[bytes, bytes]], page: list[Any]) -> Any:
    registry = CollectorRegistry()
    middleware = GuardrailMiddleware(
        Upstream(body={"items": page, **EXTRA}), policy=policy, store=store, registry=registry
    )
    async with client(middleware) as http:
        response = await http.get(ROUTE, headers=headers)
    return response, registry, store


async def in_process(policy: Policy, store: Store, headers: list[tuple[bytes, bytes]], page: list[Any]) -> Any:
    """`check` called with the request's scope, no middleware in front."""
    registry = CollectorRegistry()
    middleware = GuardrailMiddleware(Upstream(), policy=policy, store=store, registry=registry)
    checked = await InProcess(middleware).check(http_scope(ROUTE, headers=headers), copy.deepcopy(page), route=ROUTE)
    return checked, registry, store


async def behind_middleware(policy: Policy, store: Store, headers: list[tuple[bytes, bytes]], page: list[Any]) -> Any:
    """An app behind the middleware that checks its own items and answers with a GuardedJSONResponse."""
    registry = CollectorRegistry()
    gr: InProcess | None = None

    async def recommendations(request: Request) -> Response:
        assert gr is not None
        return GuardedJSONResponse(await gr.check(request, copy.deepcopy(page), route=ROUTE), extra=EXTRA)

    middleware = GuardrailMiddleware(
        Starlette(routes=[Route(ROUTE, recommendations)]), policy=policy, store=store, registry=registry
    )
    gr = InProcess(middleware)
    async with client(middleware) as http:
        response = await http.get(ROUTE, headers=headers)
    return response, registry, store


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def last_record(store: Store) -> Any:
    try:
        records = await store.decisions(USER, limit=1)
    except StoreError:
        return None  # a store that is down keeps no record to read
    return records[0] if records else None


def same_record(one: Any, other: Any) -> None:
    if one is None or other is None:
        assert one is other
        return
    assert (one.route, one.mode, one.policy, one.locale, one.degraded) == (
        other.route,
        other.mode,
        other.policy,
        other.locale,
        other.degraded,
    )
    assert one.item_ids == other.item_ids
    assert [(d.action, d.reasons, d.because) for d in one.decisions] == [
        (d.action, d.reasons, d.because) for d in other.decisions
    ]


async def assert_all_agree(
    policy: Policy, state: UserState | None, user: bool, gpc: bool, age: int | None, page: list[Any], stores: Any = None
) -> None:
    headers = request_headers(user, gpc, age)
    make = stores or (lambda: seeded(state))
    response, json_registry, json_store = await through_middleware(policy, make(), headers, page)
    checked, check_registry, check_store = await in_process(policy, make(), headers, page)
    behind, behind_registry, behind_store = await behind_middleware(policy, make(), headers, page)
    assert response.status_code == 200 and behind.status_code == 200, (response.text, behind.text)
    note(f"middleware: {response.text}")
    body = response.json()

    if policy.mode == "enforce":
        assert without_ids(checked.items) == without_ids(body["items"])  # kept, in order, each with its explanation
        assert without_ids(checked.summary) == without_ids(body["guardrail"])
        assert response.headers["cache-control"] == "private, no-store"
    else:  # shadow: the page as it came, and no summary in it
        assert checked.items == page == body["items"]
        assert "guardrail" not in body
        assert checked.summary["mode"] == "shadow"
    assert without_ids(guardrail_headers(checked.headers)) == without_ids(guardrail_headers(response.headers))
    assert without_ids(guardrail_headers(behind.headers)) == without_ids(guardrail_headers(response.headers))
    assert checked.summary["decision"] == checked.headers["Guardrail-Decision"]
    # The same bytes, whichever way the page was checked.
    written = GuardedJSONResponse(checked, extra=EXTRA).body
    assert without_ids(written) == without_ids(response.content) == without_ids(behind.content)

    assert len(checked.decisions) == len(page)
    record = await last_record(json_store)
    same_record(record, await last_record(check_store))
    same_record(record, await last_record(behind_store))
    if record is not None:  # a record keeps each decision's action, reasons and signals relied on
        assert [(d.action, d.reasons, d.because) for d in record.decisions] == [
            (d.action, d.reasons, d.because) for d in checked.decisions
        ]
    assert counts(check_registry) == counts(json_registry)
    assert counts(behind_registry) == counts(json_registry)


@examples(80)
@given(data=st.data(), mode=st.sampled_from(["enforce", "shadow"]))
async def test_check_says_what_the_middleware_says(data: st.DataObject, mode: str) -> None:
    policy = served(data.draw(policies(), "policy"), mode)
    user = data.draw(st.booleans(), "a user (else anonymous)")
    state = data.draw(st.one_of(st.none(), states(policy)), "state") if user else None
    gpc = data.draw(st.booleans(), "Sec-GPC: 1")
    age = data.draw(st.one_of(st.none(), st.integers(10, 40)), "age")
    page = data.draw(items(policy), "items")
    await assert_all_agree(policy, state, user, gpc, age, page)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("mode", ["enforce", "shadow"])
@pytest.mark.parametrize("fail_mode", ["closed", "open"])
@examples(4)
@given(data=st.data())
async def test_with_the_store_down_check_applies_the_same_fail_mode(
    data: st.DataObject, mode: str, fail_mode: str
) -> None:
    """A Redis store with nothing listening: every load fails, as when Redis is down."""
    policy = served(data.draw(policies(), "policy"), mode, fail_mode)
    page = data.draw(items(policy), "items")
    gpc = data.draw(st.booleans(), "Sec-GPC: 1")
    url = f"redis://127.0.0.1:{_unused_port()}/0"
    stores: list[Store] = []

    def down() -> Store:
        stores.append(create_store(url, timeout=0.05))
        return stores[-1]

    try:
        await assert_all_agree(policy, None, True, gpc, None, page, stores=down)
    finally:
        for store in stores:
            await store.aclose()
