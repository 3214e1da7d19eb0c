"""`guardrail.install(app, ...)` on Starlette and FastAPI: one call that fails early, a store that lives as
long as the app's lifespan (beside the app's own handlers), and the handle it returns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import guardrail
from guardrail import Guardrail, GuardrailMiddleware, PolicyError, create_store
from guardrail.context_header import GuardrailContext, parse_guardrail_context
from tests.conftest import ClientFactory, make_policy
from tests.install.conftest import Lifespan, store_connections
from tests.sidecar.servers import DEADLINE, wait_for, write_policy
from tests.store.redis_servers import RedisServer
from tests.upstream import DEFAULT_ITEMS

MERGE = {"content-type": "application/merge-patch+json"}


async def recommendations(request: Request) -> JSONResponse:
    """A recommendation endpoint: every item, and the `Guardrail-Context` it was told, echoed back."""
    told = request.headers.get("guardrail-context")
    return JSONResponse({"items": DEFAULT_ITEMS, "told": told})


async def eventually(ask: Callable[[], Awaitable[Any]], expected: Any) -> None:
    """Ask until the answer is `expected` (a store that came back is tried again once its breaker lets it)."""
    for _ in range(int(DEADLINE * 20)):
        answer = await ask()
        if answer == expected:
            return
        await asyncio.sleep(0.05)
    assert answer == expected


def ids(response: httpx.Response) -> list[str]:
    return [entry["id"] for entry in response.json()["items"]]


async def mute(client: httpx.AsyncClient, user: str, *topics: str) -> None:
    body = {"consent": {"personalization": "granted"}, "muted": {topic: {"until": None} for topic in topics}}
    response = await client.patch(
        "/guardrail/v1/controls", headers={"x-user-id": user, **MERGE}, content=orjson.dumps(body)
    )
    assert response.status_code == 200, response.text


# -- mounting -------------------------------------------------------------------------------------


@pytest.mark.parametrize("routes_added", ["before", "after"])
async def test_install_guards_a_starlette_app_whether_routes_come_before_or_after(
    routes_added: str, policy_file: Path, client_for: ClientFactory
) -> None:
    app = Starlette()
    if routes_added == "before":
        app.add_route("/recommendations", recommendations)
    gr = guardrail.install(app, policy=policy_file, store="memory://", registry=CollectorRegistry())
    if routes_added == "after":
        app.add_route("/recommendations", recommendations)
    assert isinstance(gr, Guardrail)
    assert isinstance(gr.middleware, GuardrailMiddleware)

    client = client_for(app)
    await mute(client, "alice", "sports")
    response = await client.get("/recommendations", headers={"x-user-id": "alice"})
    assert response.status_code == 200
    assert "s1" not in ids(response)  # muted: hidden by the guardrail
    assert "m1" in ids(response)
    assert response.json()["guardrail"]["hidden"] >= 1


async def test_install_on_fastapi_runs_the_apps_lifespan_beside_the_stores(
    redis_server: RedisServer, tmp_path: Path, client_for: ClientFactory
) -> None:
    policy_file = write_policy(tmp_path / "policy.yaml", store_timeout_ms=1000)
    events: list[str] = []
    connections_at_app_shutdown: list[int] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("app startup")
        yield
        events.append("app shutdown")
        connections_at_app_shutdown.append(store_connections(redis_server))

    app = FastAPI(lifespan=lifespan)
    app.add_api_route("/recommendations", recommendations)
    gr = guardrail.install(app, policy=policy_file, store=redis_server.url, registry=CollectorRegistry())
    assert store_connections(redis_server) == 0  # nothing connects before the app starts

    async with Lifespan(app).running():
        assert events == ["app startup"]
        assert store_connections(redis_server) >= 1  # connected at startup, before any request
        assert (await gr.ready())["status"] == "ready"
        client = client_for(app)
        for _ in range(3):
            response = await client.get("/recommendations", headers={"x-user-id": "bob"})
            assert response.status_code == 200
        decisions = [response.json()["guardrail"]["decision"]]

    # The app's shutdown ran while the store was still open; the store closed after it.
    assert events == ["app startup", "app shutdown"]
    assert connections_at_app_shutdown[0] >= 1
    wait_for(lambda: store_connections(redis_server) == 0, "the store's connections to close")

    # What was decided was written before the store closed.
    reader = create_store(redis_server.url, timeout=1.0)
    try:
        kept = [record.id for record in await reader.decisions("bob")]
    finally:
        await reader.aclose()
    assert len(kept) == 3
    assert decisions[0] in kept


async def test_fastapi_on_startup_and_on_shutdown_handlers_still_run(
    policy_file: Path, client_for: ClientFactory
) -> None:
    events: list[str] = []

    async def up() -> None:
        events.append("up")

    async def down() -> None:
        events.append("down")

    app = FastAPI(on_startup=[up], on_shutdown=[down])
    app.add_api_route("/recommendations", recommendations)
    guardrail.install(app, policy=policy_file, store="memory://", registry=CollectorRegistry())
    async with Lifespan(app).running():
        assert events == ["up"]
        response = await client_for(app).get("/recommendations", headers={"x-user-id": "carol"})
        assert response.json()["guardrail"]["hidden"] >= 1
    assert events == ["up", "down"]


async def test_starlette_lifespan_runs_and_a_store_down_at_boot_does_not_stop_it(
    tmp_path: Path, client_for: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app startup")
        yield
        events.append("app shutdown")

    server = RedisServer()  # not started: the store is down at boot
    policy_file = write_policy(tmp_path / "policy.yaml", store_timeout_ms=1000, fail_mode="open")
    app = Starlette(routes=[Route("/recommendations", recommendations)], lifespan=lifespan)
    gr = guardrail.install(app, policy=policy_file, store=server.url, registry=CollectorRegistry())
    try:
        with caplog.at_level(logging.WARNING, logger="guardrail"):
            async with Lifespan(app).running():
                assert events == ["app startup"]
                assert any("store does not answer at startup" in r.getMessage() for r in caplog.records)
                report = await gr.ready()
                assert report["status"] == "unavailable"
                assert report["store"].startswith("error: ")
                readyz = await client_for(app).get("/guardrail/readyz")
                assert readyz.status_code == 503
                assert readyz.json() == report  # the handle says what /readyz says

                server.start()  # the store comes back: ready says so, without a restart
                await eventually(lambda: gr.ready(), {"status": "ready", "policy": "test-policy", "store": "ok"})
                response = await client_for(app).get("/recommendations", headers={"x-user-id": "dan"})
                assert response.status_code == 200
        assert events == ["app startup", "app shutdown"]
    finally:
        server.close()


async def test_the_middleware_wrapped_by_hand_connects_and_closes_the_store_too(
    redis_server: RedisServer, tmp_path: Path, client_for: ClientFactory
) -> None:
    policy_file = write_policy(tmp_path / "policy.yaml", store_timeout_ms=1000)
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app startup")
        yield
        events.append("app shutdown")

    inner = Starlette(routes=[Route("/recommendations", recommendations)], lifespan=lifespan)
    app = GuardrailMiddleware(inner, policy=policy_file, store=redis_server.url, registry=CollectorRegistry())
    async with Lifespan(app).running():
        assert store_connections(redis_server) >= 1
        response = await client_for(app).get("/recommendations", headers={"x-user-id": "gus"})
        assert response.json()["guardrail"]["degraded"] is False
    assert events == ["app startup", "app shutdown"]
    wait_for(lambda: store_connections(redis_server) == 0, "the store's connections to close")


async def test_an_app_whose_server_sends_no_lifespan_still_works(
    redis_server: RedisServer, tmp_path: Path, client_for: ClientFactory
) -> None:
    policy_file = write_policy(tmp_path / "policy.yaml", store_timeout_ms=1000)
    app = Starlette(routes=[Route("/recommendations", recommendations)])
    gr = guardrail.install(app, policy=policy_file, store=redis_server.url, registry=CollectorRegistry())
    try:
        response = await client_for(app).get("/recommendations", headers={"x-user-id": "erin"})
        assert response.status_code == 200
        assert response.json()["guardrail"]["degraded"] is False
    finally:
        await gr.middleware.runtime.close()


# -- failing early --------------------------------------------------------------------------------


def test_a_bad_policy_raises_at_the_call_naming_every_problem(broken_policy_file: Path) -> None:
    app = Starlette()
    with pytest.raises(PolicyError) as raised:
        guardrail.install(app, policy=broken_policy_file)
    assert len(raised.value.issues) == 4
    report = str(raised.value)
    for key in ("policy_id", "purposes", "signals", "routes"):
        assert key in report
    assert app.user_middleware == []  # nothing was mounted


def test_a_missing_policy_file_raises_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the file"):
        guardrail.install(Starlette(), policy=tmp_path / "nowhere.yaml")


def test_a_bad_store_url_raises_at_the_call(policy_file: Path) -> None:
    with pytest.raises(guardrail.GuardrailError, match="unknown store URL"):
        guardrail.install(Starlette(), policy=policy_file, store="mongodb://db", registry=CollectorRegistry())


def test_an_app_that_is_not_starlette_is_refused_with_the_way_to_mount_it(policy_file: Path) -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(TypeError, match="GuardrailMiddleware"):
        guardrail.install(bare, policy=policy_file)


# -- the handle -------------------------------------------------------------------------------------


async def test_reload_swaps_the_policy_and_refuses_a_bad_one(
    policy_file: Path, broken_policy_file: Path, client_for: ClientFactory
) -> None:
    app = Starlette(routes=[Route("/recommendations", recommendations)])
    registry = CollectorRegistry()
    gr = guardrail.install(app, policy=policy_file, store="memory://", registry=registry)
    client = client_for(app)
    assert (await client.get("/guardrail/readyz")).json()["policy"] == "test-policy"

    # A path, checked: refused, and the live policy keeps serving.
    with pytest.raises(PolicyError) as raised:
        gr.reload(broken_policy_file)
    assert len(raised.value.issues) == 4
    assert gr.policy.policy_id == "test-policy"
    assert (await client.get("/guardrail/readyz")).json()["policy"] == "test-policy"
    assert registry.get_sample_value("guardrail_policy_reloads_total", {"result": "error"}) == 1

    # A Policy object: live at once. This one guards no route, so the app's answer passes untouched.
    elsewhere = make_policy(policy_id="second", routes=[{"path": "/elsewhere", "items": "/items"}])
    assert gr.reload(elsewhere) is elsewhere
    assert (await gr.ready())["policy"] == "second"
    response = await client.get("/recommendations", headers={"x-user-id": "frank"})
    assert "guardrail" not in response.json()
    assert registry.get_sample_value("guardrail_policy_reloads_total", {"result": "success"}) == 1

    # And a path again.
    assert gr.reload(policy_file).policy_id == "test-policy"
    response = await client.get("/recommendations", headers={"x-user-id": "frank"})
    assert "guardrail" in response.json()


async def test_context_is_what_the_guardrail_context_header_carries(
    policy_file: Path, client_for: ClientFactory
) -> None:
    app = Starlette()
    gr = guardrail.install(app, policy=policy_file, store="memory://", registry=CollectorRegistry())

    async def in_process(request: Request) -> JSONResponse:
        context = await gr.context(request)
        return JSONResponse({"context": context.header().decode(), "told": request.headers.get("guardrail-context")})

    app.add_route("/recommendations", recommendations)
    app.add_route("/recommendations/popular", recommendations)  # where a request not personalized goes
    app.add_route("/context", in_process)
    client = client_for(app)
    await mute(client, "alice", "sports", "movies.horror")
    alice = {"x-user-id": "alice", "accept-language": "ko"}

    told = (await client.get("/recommendations", headers=alice)).json()["told"]
    asked = await client.get("/context", headers=alice)
    context = parse_guardrail_context(asked.json()["context"])
    assert context == parse_guardrail_context(told)
    assert context.personalized
    assert context.excludes("sports") and context.excludes("movies.horror") and context.excludes("gambling")
    assert context.locale == "ko"
    assert asked.json()["told"] is None  # an unguarded route is told nothing; the handle still answers

    # GPC, a minor, nobody: each resolved as the middleware resolves it for a guarded request.
    for headers in (
        {"x-user-id": "alice", "sec-gpc": "1"},
        {"x-user-id": "alice", "x-user-age": "15"},
        {},
    ):
        told = (await client.get("/recommendations", headers=headers)).json()["told"]
        asked = await client.get("/context", headers=headers)
        assert parse_guardrail_context(asked.json()["context"]) == parse_guardrail_context(told), headers

    # An ASGI scope does as well as a request.
    def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "GET",
            "path": "/context",
            "query_string": b"",
            "headers": list(headers),
            "client": ("127.0.0.1", 40000),
        }

    assert await gr.context(scope((b"x-user-id", b"alice"), (b"accept-language", b"ko"))) == context
    assert await gr.context(scope()) == GuardrailContext(False, locale="en")  # nobody: nothing personal
