"""`GET /guardrail/v1/export` (docs/api.md#export): everything stored about the caller as one JSON download,
on the in-memory store and on a real Redis server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.errors import StoreError
from guardrail.messages import message
from guardrail.store import create_store
from guardrail.store.redis import RedisStore
from tests.conftest import ClientFactory, make_policy
from tests.store.redis_servers import RedisServer
from tests.upstream import Upstream

EXPORT = "/guardrail/v1/export"
MERGE = {"content-type": "application/merge-patch+json"}
KEYS = {"user", "exported_at", "policy", "locale", "controls", "decisions", "reasons", "reports"}


def as_user(user: str, **headers: str) -> dict[str, str]:
    return {"x-user-id": user, **headers}


class Served:
    """A client of the middleware on one store, and `settle()`: wait until its decision records are written."""

    def __init__(self, client: httpx.AsyncClient, settle: Callable[[], Awaitable[None]]) -> None:
        self.client = client
        self.settle = settle

    async def patch(self, user: str, body: dict[str, Any]) -> None:
        response = await self.client.patch(
            "/guardrail/v1/controls", headers={**as_user(user), **MERGE}, content=orjson.dumps(body)
        )
        assert response.status_code == 200, response.text

    async def recommend(self, user: str) -> str:
        response = await self.client.get("/recommendations", headers=as_user(user))
        assert response.status_code == 200
        return response.headers["guardrail-decision"]


@pytest.fixture(params=["memory", "redis"])
async def served(request: pytest.FixtureRequest, client_for: ClientFactory) -> AsyncIterator[Served]:
    if request.param == "memory":
        app = GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry())

        async def nothing() -> None:
            return None

        yield Served(client_for(app), nothing)
        return
    with RedisServer() as server:
        store = create_store(server.url, timeout=0.5)
        assert isinstance(store, RedisStore)
        try:
            app = GuardrailMiddleware(Upstream(), policy=make_policy(), store=store, registry=CollectorRegistry())
            yield Served(client_for(app), store.flush)
        finally:
            await store.aclose()


async def test_everything_kept_about_the_caller(served: Served) -> None:
    client = served.client
    await served.patch("alice", {"consent": {"personalization": "granted"}, "muted": {"sports": {"until": None}}})
    first = await served.recommend("alice")
    second = await served.recommend("alice")
    await served.settle()

    response = await client.get(EXPORT, headers=as_user("alice"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == 'attachment; filename="guardrail-export.json"'
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == KEYS
    assert body["user"] == "alice" and body["policy"] == "test-policy" and body["locale"] == "en"
    assert datetime.fromisoformat(body["exported_at"].replace("Z", "+00:00"))
    assert body["reports"] == []
    # The controls exactly as GET /v1/controls shows them.
    assert body["controls"] == (await client.get("/guardrail/v1/controls", headers=as_user("alice"))).json()
    assert body["controls"]["muted"] == {"sports": {"until": None}}

    # Every record, newest first, each as GET /v1/decisions/{id} shows it (in the caller's language), plus its locale.
    assert [d["decision"] for d in body["decisions"]] == [second, first]
    for decision in body["decisions"]:
        receipt = (await client.get(f"/guardrail/v1/decisions/{decision['decision']}", headers=as_user("alice"))).json()
        assert decision == {**receipt, "locale": "en"}
    items = {item["id"]: item for item in body["decisions"][0]["items"]}
    assert items["m1"] == {
        "id": "m1",
        "action": "keep",
        "reasons": [],
        "because": ["watch_history"],
        "text": "You see this because of what you watched.",
    }
    assert items["s1"]["action"] == "hide" and items["s1"]["reasons"] == ["topic_muted"]
    assert items["s1"]["text"] == message("en", "reason.topic_muted")

    # The meaning of exactly the reason codes used.
    used = {code for d in body["decisions"] for item in d["items"] for code in item["reasons"]}
    assert used >= {"topic_muted", "sensitive_needs_opt_in"}
    assert body["reasons"] == {code: message("en", f"reason.{code}") for code in used}


async def test_someone_elses_records_never_appear(served: Served) -> None:
    client = served.client
    await served.patch("alice", {"consent": {"personalization": "granted"}, "muted": {"gambling": {"until": None}}})
    alices = await served.recommend("alice")
    await served.patch("bob", {"personalization": False})
    bobs = await served.recommend("bob")
    await served.settle()

    alice = (await client.get(EXPORT, headers=as_user("alice"))).json()
    bob = (await client.get(EXPORT, headers=as_user("bob"))).json()
    assert [d["decision"] for d in alice["decisions"]] == [alices]
    assert [d["decision"] for d in bob["decisions"]] == [bobs]
    assert alice["controls"]["user"] == "alice" and bob["controls"]["user"] == "bob"
    assert bob["controls"]["muted"] == {} and bob["controls"]["personalization"] is False
    assert bobs not in orjson.dumps(alice).decode() and alices not in orjson.dumps(bob).decode()

    # Someone who never changed anything and was never served: the defaults, nothing else.
    carol = (await client.get(EXPORT, headers=as_user("carol"))).json()
    assert carol["decisions"] == [] and carol["reasons"] == {} and carol["reports"] == []
    assert carol["controls"] == (await client.get("/guardrail/v1/controls", headers=as_user("carol"))).json()
    assert carol["controls"]["revision"] == 0


async def test_every_record_kept_not_only_the_latest_fifty(client_for: ClientFactory) -> None:
    # More than the 50 that GET /v1/decisions and the page read: the export reads every record kept.
    app = GuardrailMiddleware(Upstream(), policy=make_policy(decisions_per_user=60), registry=CollectorRegistry())
    client = client_for(app)
    for _ in range(61):
        assert (await client.get("/recommendations", headers=as_user("alice"))).status_code == 200
    body = (await client.get(EXPORT, headers=as_user("alice"))).json()
    assert len(body["decisions"]) == 60


async def test_korean_explains_reasons_in_korean(served: Served) -> None:
    client = served.client
    await served.patch("alice", {"consent": {"personalization": "granted"}, "muted": {"sports": {"until": None}}})
    await served.recommend("alice")
    await served.settle()

    # Accept-Language when the user set no language.
    by_header = (await client.get(EXPORT, headers=as_user("alice", **{"accept-language": "ko-KR,ko;q=0.9"}))).json()
    assert by_header["locale"] == "ko"
    items = {item["id"]: item for item in by_header["decisions"][0]["items"]}
    assert items["s1"]["text"] == message("ko", "reason.topic_muted") != message("en", "reason.topic_muted")
    assert items["m1"]["text"] == message("ko", "item.because", signals="what you watched (ko)")
    assert by_header["reasons"]["topic_muted"] == message("ko", "reason.topic_muted")
    assert all(text == message("ko", f"reason.{code}") for code, text in by_header["reasons"].items())
    # The record keeps the language the page was served in; the texts follow the caller's now.
    assert by_header["decisions"][0]["locale"] == "en"

    # The user's own language control wins over Accept-Language.
    await served.patch("alice", {"locale": "ko"})
    by_control = (await client.get(EXPORT, headers=as_user("alice", **{"accept-language": "en"}))).json()
    assert by_control["locale"] == "ko"
    assert by_control["reasons"] == by_header["reasons"]
    # Neither: the policy's default.
    await served.patch("alice", {"locale": None})
    assert (await client.get(EXPORT, headers=as_user("alice"))).json()["locale"] == "en"


async def test_anonymous_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(EXPORT)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert "content-disposition" not in response.headers
    wrong = await client.post(EXPORT, headers=as_user("alice"))
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"


@pytest.mark.parametrize("part", ["load", "decisions"])
async def test_store_down_is_503(app: GuardrailMiddleware, client: httpx.AsyncClient, part: str) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("down")

    setattr(app.store, part, broken)
    response = await client.get(EXPORT, headers=as_user("alice"))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    assert "content-disposition" not in response.headers


async def test_a_real_redis_server_that_stops_answering_is_503(client_for: ClientFactory) -> None:
    with RedisServer() as server:
        store = create_store(server.url, timeout=0.2)
        try:
            app = GuardrailMiddleware(Upstream(), policy=make_policy(), store=store, registry=CollectorRegistry())
            client = client_for(app)
            assert (await client.get(EXPORT, headers=as_user("alice"))).status_code == 200
            server.kill()
            response = await client.get(EXPORT, headers=as_user("alice"))
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
        finally:
            await store.aclose()


async def test_the_controls_page_links_to_the_download(client: httpx.AsyncClient) -> None:
    page = (await client.get("/guardrail/controls", headers=as_user("alice"))).text
    link = f'<a href="{EXPORT}">{message("en", "page.export.link")}</a>'
    assert link in page and message("en", "page.export.help") in page
    # A plain link: it works without JavaScript (the page has none), and it comes before the erase form.
    assert "<script" not in page and page.index(link) < page.index('action="/guardrail/controls/erase"')
    korean = (await client.get("/guardrail/controls", headers=as_user("alice", **{"accept-language": "ko"}))).text
    assert f'<a href="{EXPORT}">{message("ko", "page.export.link")}</a>' in korean


async def test_the_link_follows_the_prefix(client_for: ClientFactory) -> None:
    client = client_for(
        GuardrailMiddleware(Upstream(), policy=make_policy(prefix="/me/privacy"), registry=CollectorRegistry())
    )
    page = (await client.get("/me/privacy/controls", headers=as_user("alice"))).text
    assert '<a href="/me/privacy/v1/export">' in page
    response = await client.get("/me/privacy/v1/export", headers=as_user("alice"))
    assert response.status_code == 200 and response.json()["user"] == "alice"
