"""The middleware as a platform team mounts it: what passes through, what is checked, what comes out."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from guardrail import GuardrailError, GuardrailMiddleware, MemoryStore, Policy
from guardrail.policy.loading import policy_from_mapping
from tests.conftest import BASE_POLICY, ClientFactory, make_policy
from tests.upstream import Upstream, call, http_scope, item

ALICE = {"x-user-id": "alice"}
MERGE = {"content-type": "application/merge-patch+json"}


async def patch(client: httpx.AsyncClient, user: str, body: dict[str, Any]) -> httpx.Response:
    response = await client.patch(
        "/guardrail/v1/controls", headers={"x-user-id": user, **MERGE}, content=orjson.dumps(body)
    )
    assert response.status_code == 200, response.text
    return response


def guarded(upstream: Any, policy: Policy | None = None, **kwargs: Any) -> GuardrailMiddleware:
    return GuardrailMiddleware(
        upstream, policy=policy or make_policy(), registry=kwargs.pop("registry", CollectorRegistry()), **kwargs
    )


def ids(response: httpx.Response, pointer: str = "items") -> list[str]:
    return [entry["id"] for entry in response.json()[pointer]]


# -- what passes through untouched -------------------------------------------------------------


async def test_lifespan_and_websocket_scopes_pass_through() -> None:
    started: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append("up")
        yield
        started.append("down")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    middleware = guarded(Starlette(routes=[WebSocketRoute("/ws", echo)], lifespan=lifespan))

    sent = await exchange(
        middleware, {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert started == ["up", "down"]

    scope = {**http_scope("/ws", headers=[(b"x-user-id", b"alice")]), "type": "websocket", "subprotocols": []}
    messages = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hello"}]
    sent = await exchange(middleware, scope, messages)
    assert sent[0]["type"] == "websocket.accept"
    assert sent[1] == {"type": "websocket.send", "text": "hello"}


async def request_then_wait() -> Message:
    """An empty request, then nothing until the app gives up listening (it never disconnects)."""
    if not getattr(request_then_wait, "sent", False):
        request_then_wait.sent = True  # type: ignore[attr-defined]
        return {"type": "http.request", "body": b"", "more_body": False}
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def exchange(app: Any, scope: Any, incoming: Sequence[Message]) -> list[Message]:
    """Run an ASGI app on a scope, feeding it `incoming` messages, and collect what it sends."""
    queue = list(incoming)
    sent: list[Message] = []

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_unguarded_route_streams_without_buffering() -> None:
    events: list[str] = []

    async def stream() -> Any:
        for part in (b"one,", b"two,", b"three"):
            events.append(f"app sent {part!r}")
            yield part

    app = Starlette(routes=[Route("/stream", lambda r: StreamingResponse(stream(), media_type="application/json"))])
    sent: list[Message] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            events.append(f"client got {message['body']!r}")
        sent.append(message)

    await guarded(app)(http_scope("/stream", headers=[(b"x-user-id", b"alice")]), request_then_wait, send)
    # Each chunk reaches the client before the app produces the next one.
    assert events == [
        "app sent b'one,'",
        "client got b'one,'",
        "app sent b'two,'",
        "client got b'two,'",
        "app sent b'three'",
        "client got b'three'",
    ]
    assert not any(name.startswith(b"guardrail-") for name, _ in sent[0]["headers"])


@pytest.mark.parametrize("method", ["POST", "HEAD"])
async def test_methods_the_route_does_not_guard_pass_through(client_for: ClientFactory, method: str) -> None:
    upstream = Upstream()
    client = client_for(guarded(upstream))
    response = await client.request(method, "/recommendations", headers=ALICE)
    assert "guardrail-decision" not in response.headers
    if method == "POST":
        assert response.content == upstream.payload()


@pytest.mark.parametrize(
    ("status", "content_type"),
    [(302, "text/html"), (404, "application/json"), (500, "application/json"), (503, "application/problem+json")],
)
async def test_errors_and_redirects_pass_through_untouched(
    client_for: ClientFactory, status: int, content_type: str
) -> None:
    upstream = Upstream(body=b"<p>not what you think</p>", status=status, content_type=content_type)
    registry = CollectorRegistry()
    client = client_for(guarded(upstream, registry=registry))
    response = await client.get("/recommendations", headers=ALICE)
    assert response.status_code == status
    assert response.content == b"<p>not what you think</p>"
    assert "guardrail-decision" not in response.headers
    outcome = {"route": "/recommendations", "outcome": "passthrough"}
    assert registry.get_sample_value("guardrail_requests_total", outcome) == 1


# -- what a guarded response looks like -------------------------------------------------------


async def test_guarded_response_is_checked_and_annotated(client_for: ClientFactory) -> None:
    client = client_for(guarded(Upstream()))
    await patch(client, "alice", {"consent": {"personalization": "granted"}, "muted": {"sports": {"until": None}}})
    response = await client.get("/recommendations", headers=ALICE)

    assert response.status_code == 200
    body = response.json()
    # s1/p1 are sports (muted), g1/h1 need an opt-in, p1 is also partner data.
    assert ids(response) == ["m1", "m2"]
    assert body["items"][0]["explanation"] == {
        "text": "You see this because of what you watched.",
        "because": ["watch_history"],
        "controls": "/guardrail/controls",
        # Alice can ask why she sees it, on a page of its own.
        "why": f"/guardrail/why/{response.headers['guardrail-decision']}/m1",
    }
    assert body["items"][1]["explanation"]["because"] == ["search_history"]
    assert body["page"] == 1  # the rest of the upstream body is kept
    summary = body["guardrail"]
    assert summary == {
        "decision": response.headers["guardrail-decision"],
        "mode": "enforce",
        "policy": "test-policy",
        "kept": 2,
        "hidden": 4,
        "degraded": False,
        "notice": "We hid 4 suggestions. Your controls show why.",
    }
    assert response.headers["guardrail-mode"] == "enforce"
    assert response.headers["guardrail-hidden"] == "4"
    assert "guardrail-degraded" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)


async def test_notice_names_the_muted_topic(client_for: ClientFactory) -> None:
    upstream = Upstream(
        body={"items": [item("a", ["movies"], []), item("b", ["sports"], []), item("c", ["sports"], [])]}
    )
    client = client_for(guarded(upstream))
    await patch(client, "alice", {"muted": {"sports": {"until": None}}})
    body = (await client.get("/recommendations", headers=ALICE)).json()
    assert [entry["id"] for entry in body["items"]] == ["a"]
    assert body["items"][0]["explanation"]["text"] == "Popular with many people right now."
    assert body["guardrail"]["notice"] == "We hid 2 suggestions because you muted sports."


async def test_nothing_hidden_means_no_notice(client_for: ClientFactory) -> None:
    client = client_for(guarded(Upstream(body={"items": [item("a", ["movies"], [])]})))
    response = await client.get("/recommendations", headers=ALICE)
    assert response.json()["guardrail"]["notice"] is None
    assert response.headers["guardrail-hidden"] == "0"


async def test_items_without_signals_use_the_route_default(client_for: ClientFactory) -> None:
    upstream = Upstream(body={"items": [item("a", ["movies"]), item("b", ["movies"], [])]})
    client = client_for(guarded(upstream))
    # Not consented: the default signal (watch_history) makes `a` personalized, so it is hidden.
    assert ids(await client.get("/recommendations", headers=ALICE)) == ["b"]
    await patch(client, "alice", {"consent": {"personalization": "granted"}})
    assert ids(await client.get("/recommendations", headers=ALICE)) == ["a", "b"]


async def test_locale_follows_control_then_accept_language(client_for: ClientFactory) -> None:
    client = client_for(guarded(Upstream(body={"items": [item("a", ["movies"], [])]})))

    async def text(headers: dict[str, str]) -> str:
        response = await client.get("/recommendations", headers={**ALICE, **headers})
        return str(response.json()["items"][0]["explanation"]["text"])

    assert await text({}) == "Popular with many people right now."
    assert await text({"accept-language": "ko-KR,ko;q=0.9,en;q=0.5"}) == "지금 많은 사람이 보고 있어요."
    assert await text({"accept-language": "fr, en;q=0.1"}) == "Popular with many people right now."
    await patch(client, "alice", {"locale": "ko"})
    assert await text({"accept-language": "en"}) == "지금 많은 사람이 보고 있어요."


async def test_root_list_and_prefix_routes(client_for: ClientFactory) -> None:
    root = Upstream(body=[item("a", ["movies"], []), item("b", ["gambling"], ["watch_history"])])
    response = await client_for(guarded(root)).get("/list", headers=ALICE)
    assert [entry["id"] for entry in response.json()] == ["a"]
    assert response.headers["guardrail-hidden"] == "1"

    nested = Upstream(body={"data": {"items": [item("a", ["movies"], []), item("b", ["movies"], ["watch_history"])]}})
    response = await client_for(guarded(nested)).get("/feed/home/top", headers=ALICE)
    assert [entry["id"] for entry in response.json()["data"]["items"]] == ["a"]
    assert response.json()["guardrail"]["hidden"] == 1


async def test_renamed_fields(client_for: ClientFactory) -> None:
    routes = [
        {"path": "/shop", "items": "/products", "fields": {"id": "sku", "categories": "departments", "signals": "why"}}
    ]
    upstream = Upstream(
        body={
            "products": [
                {"sku": 7, "departments": ["gambling"], "why": []},
                {"sku": 8, "departments": ["movies"], "why": ["watch_history"]},
            ]
        }
    )
    client = client_for(guarded(upstream, make_policy(routes=routes)))
    response = await client.get("/shop", headers=ALICE)
    assert [entry["sku"] for entry in response.json()["products"]] == [7]
    assert response.json()["products"][0]["explanation"]["text"] == "Popular with many people right now."


async def test_mounts_in_fastapi_with_add_middleware(client_for: ClientFactory) -> None:
    app = FastAPI()

    @app.get("/recommendations")
    async def recommendations() -> dict[str, Any]:
        return {"items": [item("a", ["movies"], ["watch_history"]), item("b", ["sports"], [])]}

    app.add_middleware(GuardrailMiddleware, policy=make_policy(), store=MemoryStore(), registry=CollectorRegistry())
    client = client_for(app)
    await patch(client, "alice", {"consent": {"personalization": "granted"}})
    response = await client.get("/recommendations", headers=ALICE)
    assert ids(response) == ["a", "b"]
    assert response.json()["guardrail"]["kept"] == 2


async def test_policy_file_path_and_store_object(client_for: ClientFactory, tmp_path: Any) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text(orjson.dumps(BASE_POLICY).decode())  # JSON is YAML
    store = MemoryStore()
    client = client_for(GuardrailMiddleware(Upstream(), policy=str(file), store=store, registry=CollectorRegistry()))
    await patch(client, "alice", {"signals": {"watch_history": False}})
    state = await store.load("alice")
    assert state is not None and state.signals == {"watch_history": False}


# -- identity ---------------------------------------------------------------------------------


async def test_identity_header_from_untrusted_peer_is_ignored(client_for: ClientFactory) -> None:
    upstream = Upstream(body={"items": [item("a", ["movies"], ["watch_history"]), item("b", ["movies"], [])]})
    middleware = guarded(upstream)
    trusted = client_for(middleware)
    await patch(trusted, "alice", {"consent": {"personalization": "granted"}})
    assert ids(await trusted.get("/recommendations", headers=ALICE)) == ["a", "b"]

    spoofer = client_for(middleware, peer="203.0.113.9")
    assert (await spoofer.get("/guardrail/v1/controls", headers=ALICE)).status_code == 401
    # Anonymous on the guarded route: no consent, so only the non-personalized item.
    assert ids(await spoofer.get("/recommendations", headers=ALICE)) == ["b"]
    response = await spoofer.patch("/guardrail/v1/controls", headers={**ALICE, **MERGE}, content=b"{}")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_age_header_only_from_trusted_peer(client_for: ClientFactory) -> None:
    upstream = Upstream(body={"items": [item("a", ["movies"], ["watch_history"]), item("b", ["health"], [])]})
    middleware = guarded(upstream)
    trusted = client_for(middleware)
    await patch(trusted, "alice", {"consent": {"personalization": "granted"}})
    minor = await trusted.get("/recommendations", headers={**ALICE, "x-user-age": "15"})
    assert ids(minor) == []
    assert minor.json()["guardrail"]["notice"] == "We hid 2 suggestions to keep young people safe."
    adult = await trusted.get("/recommendations", headers={**ALICE, "x-user-age": "30"})
    assert ids(adult) == ["a", "b"]


# -- non-personalized routing -----------------------------------------------------------------


def all_denied_by_default() -> Policy:
    purposes = {name: {**purpose, "default": "denied"} for name, purpose in BASE_POLICY["purposes"].items()}
    return make_policy(purposes=purposes)


async def test_no_consent_asks_the_non_personalized_route_without_identity(client_for: ClientFactory) -> None:
    upstream = Upstream(body={"items": [item("a", ["movies"]), item("b", ["sports"])]})
    client = client_for(guarded(upstream, all_denied_by_default()))
    response = await client.get(
        "/recommendations", headers={**ALICE, "x-user-age": "40", "cookie": "session=1", "accept": "application/json"}
    )
    seen = upstream.seen[-1]
    assert seen["path"] == "/recommendations/popular"
    assert seen["raw_path"] == b"/recommendations/popular"
    headers = upstream.headers_seen()
    assert "x-user-id" not in headers and "x-user-age" not in headers and "cookie" not in headers
    assert headers["accept"] == "application/json"
    # Items of the rewritten route that do not list signals relied on none: shown as popular.
    assert ids(response) == ["a", "b"]
    assert response.json()["items"][0]["explanation"]["text"] == "Popular with many people right now."

    await patch(client, "alice", {"consent": {"personalization": "granted"}})
    await client.get("/recommendations", headers=ALICE)
    assert upstream.seen[-1]["path"] == "/recommendations"
    assert upstream.headers_seen()["x-user-id"] == "alice"


@pytest.mark.parametrize(
    ("controls", "headers"),
    [
        pytest.param({"personalization": False}, {}, id="personalization-off"),
        pytest.param({}, {"x-user-age": "12"}, id="minor"),
        pytest.param({"consent": {"personalization": "denied"}}, {}, id="consent-withdrawn"),
    ],
)
async def test_personalization_not_allowed_means_non_personalized_route(
    client_for: ClientFactory, controls: dict[str, Any], headers: dict[str, str]
) -> None:
    upstream = Upstream(body={"items": [item("a", ["movies"])]})
    client = client_for(guarded(upstream, all_denied_by_default()))
    await patch(
        client, "alice", {"consent": {"personalization": "granted", "sharing": "granted", "measurement": "granted"}}
    )
    await patch(client, "alice", controls)
    response = await client.get("/recommendations", headers={**ALICE, **headers})
    personalization_off = controls.get("personalization") is False or "x-user-age" in headers
    expected = "/recommendations/popular" if personalization_off else "/recommendations"
    assert upstream.seen[-1]["path"] == expected
    if personalization_off:
        assert "x-user-id" not in upstream.headers_seen()
        assert ids(response) == ["a"]


async def test_a_purpose_granted_by_default_still_allows_personalization(client_for: ClientFactory) -> None:
    # `measurement` defaults to granted in the test policy: the user has not refused everything,
    # so the personalized route is asked and each item is checked on its own.
    upstream = Upstream(
        body={"items": [item("a", ["movies"], ["play_count"]), item("b", ["movies"], ["watch_history"])]}
    )
    client = client_for(guarded(upstream))
    response = await client.get("/recommendations", headers=ALICE)
    assert upstream.seen[-1]["path"] == "/recommendations"
    assert ids(response) == ["a"]


# -- shadow mode ------------------------------------------------------------------------------


async def test_shadow_mode_passes_the_body_byte_identical(client_for: ClientFactory) -> None:
    upstream = Upstream()
    registry = CollectorRegistry()
    client = client_for(guarded(upstream, make_policy(mode="shadow"), registry=registry))
    response = await client.get("/recommendations", headers=ALICE)
    assert response.content == upstream.payload()
    assert response.headers["guardrail-mode"] == "shadow"
    assert response.headers["guardrail-hidden"] == "5"  # all but the non-personalized sports item
    assert response.headers["content-length"] == str(len(upstream.payload()))
    assert (
        registry.get_sample_value("guardrail_requests_total", {"route": "/recommendations", "outcome": "shadow"}) == 1
    )
    decisions = (await client.get("/guardrail/v1/decisions", headers=ALICE)).json()["decisions"]
    assert decisions[0]["mode"] == "shadow" and decisions[0]["hidden"] == 5


# -- bad upstream output ----------------------------------------------------------------------

SECRET = b"SECRET-UPSTREAM-DETAIL"
BAD_BODIES = [
    pytest.param(b'{"note": "%s", "items": [1, 2', "not valid JSON", id="truncated-json"),
    pytest.param(b'{"note": "%s", "results": []}', "nothing at the items pointer", id="no-items-key"),
    pytest.param(b'{"note": "%s", "items": {"a": 1}}', "not a list", id="items-not-a-list"),
    pytest.param(b'{"note": "%s", "items": [{"title": "no id"}]}', "has no 'id'", id="item-without-id"),
    pytest.param(b'{"note": "%s", "items": ["just a string"]}', "not an object", id="item-not-object"),
    pytest.param(
        b'{"note": "%s", "items": [{"id": "a", "categories": "movies"}]}', "must be lists", id="categories-not-list"
    ),
    pytest.param(
        b'{"note": "%s", "items": [{"id": "a", "categories": [{"x": 1}]}]}', "must be strings", id="category-not-string"
    ),
    pytest.param(b'\xff\xfe{"note": "%s"}', "not valid JSON", id="invalid-utf8"),
]


@pytest.mark.parametrize(("body", "why"), BAD_BODIES)
async def test_bad_body_fails_closed_with_502(client_for: ClientFactory, body: bytes, why: str) -> None:
    registry = CollectorRegistry()
    client = client_for(guarded(Upstream(body=body % SECRET), registry=registry))
    response = await client.get("/recommendations", headers=ALICE)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["guardrail-degraded"] == "1"
    assert SECRET not in response.content
    assert why in response.json()["detail"]
    assert registry.get_sample_value("guardrail_fail_mode_total", {"mode": "closed"}) == 1
    assert (
        registry.get_sample_value(
            "guardrail_requests_total", {"route": "/recommendations", "outcome": "upstream_error"}
        )
        == 1
    )


@pytest.mark.parametrize(("body", "why"), BAD_BODIES)
async def test_bad_body_passes_through_marked_when_open(client_for: ClientFactory, body: bytes, why: str) -> None:
    upstream = Upstream(body=body % SECRET)
    registry = CollectorRegistry()
    client = client_for(guarded(upstream, make_policy(fail_mode="open"), registry=registry))
    response = await client.get("/recommendations", headers=ALICE)
    assert response.status_code == 200
    assert response.content == body % SECRET
    assert response.headers["guardrail-degraded"] == "1"
    assert registry.get_sample_value("guardrail_fail_mode_total", {"mode": "open"}) == 1


async def test_gzip_body_is_decoded_checked_and_reencoded(client_for: ClientFactory) -> None:
    client = client_for(guarded(Upstream(gzip=True)))
    await patch(client, "alice", {"consent": {"personalization": "granted"}})
    response = await client.get("/recommendations", headers=ALICE)  # httpx inflates it
    assert response.headers["content-encoding"] == "gzip"
    assert ids(response) == ["m1", "m2", "s1", "p1"]  # g1 and h1 need an opt-in
    assert response.json()["items"][0]["explanation"]["because"] == ["watch_history"]


async def test_gzip_on_the_wire_has_a_correct_length() -> None:
    upstream = Upstream(gzip=True, chunks=3)
    middleware = guarded(upstream)
    sent = await call(middleware, http_scope("/recommendations", headers=[(b"x-user-id", b"alice")]))
    headers = dict(sent[0]["headers"])
    body = b"".join(message.get("body", b"") for message in sent[1:])
    assert headers[b"content-encoding"] == b"gzip"
    assert int(headers[b"content-length"]) == len(body)
    document = orjson.loads(gzip.decompress(body))
    assert [entry["id"] for entry in document["items"]] == ["s1"]


async def test_unsupported_encoding_follows_the_fail_mode(client_for: ClientFactory) -> None:
    class Brotli(Upstream):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-encoding", b"br")],
                }
            )
            await send({"type": "http.response.body", "body": b"\x1b\x00"})

    response = await client_for(guarded(Brotli())).get("/recommendations", headers=ALICE)
    assert response.status_code == 502
    assert "'br' is not supported" in response.json()["detail"]


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_body_over_max_body_bytes(fail_mode: str) -> None:
    big = {"items": [item(f"i{n}", ["movies"], []) for n in range(400)]}
    upstream = Upstream(body=big, chunks=8)
    payload = upstream.payload()
    assert len(payload) > 4096
    middleware = guarded(upstream, make_policy(max_body_bytes=4096, fail_mode=fail_mode))
    sent = await call(middleware, http_scope("/recommendations", headers=[(b"x-user-id", b"alice")]))
    start = sent[0]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    headers = dict(start["headers"])
    assert headers[b"guardrail-degraded"] == b"1"
    if fail_mode == "closed":
        assert start["status"] == 502
        assert b"max_body_bytes" in body and b"i0" not in body
    else:
        assert start["status"] == 200
        assert body == payload  # streamed through whole, unchecked
        assert sent[-1].get("more_body", False) is False


# -- prefix -----------------------------------------------------------------------------------


async def test_policy_can_move_or_switch_off_the_prefix(client_for: ClientFactory) -> None:
    moved = client_for(guarded(Upstream(), make_policy(prefix="/privacy")))
    assert (await moved.get("/privacy/v1/controls", headers=ALICE)).json()["user"] == "alice"
    assert (await moved.get("/privacy/healthz")).json() == {"status": "ok"}
    explanation = (await moved.get("/recommendations", headers=ALICE)).json()["items"][0]["explanation"]
    assert explanation["controls"] == "/privacy/controls"

    upstream = Upstream(body=b"the app's own page", content_type="text/plain")
    off = client_for(guarded(upstream, make_policy(prefix="/privacy")))
    response = await off.get("/guardrail/v1/controls", headers=ALICE)
    assert response.content == b"the app's own page"  # the app answers: the prefix moved away

    switched_off = client_for(guarded(upstream, policy_from_mapping({**BASE_POLICY, "prefix": None})))
    for path in ("/guardrail/v1/controls", "/guardrail/healthz"):
        response = await switched_off.get(path, headers=ALICE)
        assert response.content == b"the app's own page"


async def test_paths_that_only_share_the_prefix_letters_go_to_the_app(client_for: ClientFactory) -> None:
    upstream = Upstream(body=b"app", content_type="text/plain")
    response = await client_for(guarded(upstream)).get("/guardrailfoo")
    assert response.content == b"app"


# -- metrics ----------------------------------------------------------------------------------


async def test_metrics_count_items_reasons_and_overhead(client_for: ClientFactory) -> None:
    registry = CollectorRegistry()
    client = client_for(guarded(Upstream(), registry=registry))
    await patch(client, "alice", {"consent": {"personalization": "granted"}, "muted": {"sports": {"until": None}}})
    await client.get("/recommendations", headers=ALICE)
    route = {"route": "/recommendations"}
    assert registry.get_sample_value("guardrail_requests_total", {**route, "outcome": "enforced"}) == 1
    assert registry.get_sample_value("guardrail_items_total", {**route, "action": "keep"}) == 2
    assert registry.get_sample_value("guardrail_items_total", {**route, "action": "hide"}) == 4
    assert registry.get_sample_value("guardrail_hidden_items_total", {**route, "reason": "topic_muted"}) == 2
    assert registry.get_sample_value("guardrail_hidden_items_total", {**route, "reason": "sensitive_needs_opt_in"}) == 2
    assert registry.get_sample_value("guardrail_overhead_seconds_count") == 1
    assert registry.get_sample_value("guardrail_policy_info", {"policy": "test-policy"}) == 1
    assert registry.get_sample_value("guardrail_control_changes_total", {"field": "muted"}) == 1


async def test_store_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_STORE", "memory://")
    assert isinstance(
        GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry()).store, MemoryStore
    )
    monkeypatch.setenv("GUARDRAIL_STORE", "nosuch://x")
    with pytest.raises(GuardrailError, match="unknown store URL 'nosuch://x'; use one of: memory://, redis://"):
        GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry())


async def test_the_gpc_support_statement_is_served(client_for: ClientFactory) -> None:
    upstream = Upstream(body=b"app", content_type="text/plain")
    response = await client_for(guarded(upstream)).get("/.well-known/gpc.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    statement = response.json()
    assert statement["gpc"] is True
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", statement["lastUpdate"])
    # With the guardrail's HTTP surface switched off, the app answers for itself.
    off = client_for(guarded(upstream, policy_from_mapping({**BASE_POLICY, "prefix": None})))
    assert (await off.get("/.well-known/gpc.json")).content == b"app"


@pytest.mark.parametrize(
    ("values", "honoured"),
    [
        pytest.param(["1"], True, id="one"),
        pytest.param([" 1\t"], True, id="blanks-trimmed"),
        pytest.param(["0", "1"], True, id="repeated-one-is-enough"),
        pytest.param(["0"], False, id="zero"),
        pytest.param(["true"], False, id="true"),
        pytest.param(["yes"], False, id="yes"),
        pytest.param([""], False, id="empty"),
        pytest.param(["0, 1"], True, id="joined-repeats-one-is-enough"),
        pytest.param(["0, 0"], False, id="joined-repeats-no-1"),
        pytest.param(["11"], False, id="not-exactly-1"),
    ],
)
async def test_sec_gpc_is_exactly_1(values: list[str], honoured: bool) -> None:
    upstream = Upstream(
        body={"items": [item("p", ["movies"], ["partner_data"]), item("w", ["movies"], ["watch_history"])]}
    )
    middleware = guarded(upstream)
    store = middleware.store
    from datetime import UTC, datetime

    from guardrail.controls import validate_patch

    now = datetime.now(UTC)
    await store.patch(
        "alice",
        validate_patch(middleware.policy, {"consent": {"personalization": "granted"}}, now),
        if_match=None,
        now=now,
    )
    headers = [(b"x-user-id", b"alice"), *((b"sec-gpc", value.encode()) for value in values)]
    sent = await call(middleware, http_scope("/recommendations", headers=headers))
    body = orjson.loads(b"".join(message.get("body", b"") for message in sent[1:]))
    shown = [entry["id"] for entry in body["items"]]
    # partner_data is sale_or_share: the browser's signal opts out of it, and of nothing else.
    assert shown == (["w"] if honoured else ["p", "w"])
    if honoured:
        assert "privacy signal" in body["items"][0]["explanation"]["text"]
