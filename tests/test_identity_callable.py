"""`identity.source: callable`: the host says who is asking with `identify(scope)` (docs/integrate.md, "Identity:
where the middleware sits"). The function runs behind the host's own authentication middleware, on guarded
routes, the controls API and the page alike; what it returns is checked like any id, and its failures make the
caller anonymous, never a 500."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail import GuardrailError, GuardrailMiddleware
from guardrail.identity import Identify
from tests.conftest import ClientFactory, make_policy
from tests.upstream import Upstream, item

CALLABLE = make_policy(identity={"source": "callable"})
# What the policy's /feed/* route returns (its items are at /data/items).
ITEMS = {"data": {"items": [item("personal", ["movies"], ["watch_history"]), item("popular", ["movies"], [])]}}
MERGE = {"content-type": "application/merge-patch+json"}
GRANT = b'{"consent": {"personalization": "granted"}}'


class SessionAuth(AuthenticationBackend):
    """The service's own authentication, in front of the guardrail: a made-up session header."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-session-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def from_session(scope: MutableMapping[str, Any]) -> tuple[str, int | None] | None:
    user = scope["user"]
    return (user.display_name, None) if user.is_authenticated else None


def behind_auth(identify: Identify, upstream: ASGIApp | None = None) -> tuple[Starlette, GuardrailMiddleware]:
    guardrail = GuardrailMiddleware(
        upstream or Upstream(body=ITEMS), policy=CALLABLE, registry=CollectorRegistry(), identify=identify
    )
    app = Starlette(
        routes=[Mount("/", app=guardrail)], middleware=[Middleware(AuthenticationMiddleware, backend=SessionAuth())]
    )
    return app, guardrail


async def whoami(client: httpx.AsyncClient, headers: dict[str, str]) -> int | str:
    response = await client.get("/guardrail/v1/controls", headers=headers)
    return str(response.json()["user"]) if response.status_code == 200 else response.status_code


def shown(response: httpx.Response) -> list[str]:
    return [entry["id"] for entry in response.json()["data"]["items"]]


async def test_identify_reads_what_the_auth_middleware_left_on_every_surface(client_for: ClientFactory) -> None:
    app, _ = behind_auth(from_session)
    client = client_for(app, "203.0.113.5")  # not a trusted proxy: the callable does not care
    carol = {"x-session-user": "carol"}
    assert await whoami(client, carol) == "carol"
    assert await whoami(client, {}) == 401
    assert await whoami(client, {"x-user-id": "mallory"}) == 401  # the header source's header means nothing
    # The guarded route sees carol too: what she consents to changes what she is shown.
    assert shown(await client.get("/feed/x", headers=carol)) == ["popular"]
    assert (await client.patch("/guardrail/v1/controls", headers={**carol, **MERGE}, content=GRANT)).status_code == 200
    assert shown(await client.get("/feed/x", headers=carol)) == ["personal", "popular"]
    assert shown(await client.get("/feed/x", headers={"x-session-user": "dave"})) == ["popular"]
    # The page knows her as well.
    assert (await client.get("/guardrail/controls", headers=carol)).status_code == 200
    assert (await client.get("/guardrail/controls")).status_code == 401


async def test_identify_may_read_scope_state_and_give_an_age(client_for: ClientFactory) -> None:
    class SetState:
        """An upstream middleware that puts who it authenticated in `scope["state"]`."""

        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                scope.setdefault("state", {})["account"] = {
                    "id": headers.get(b"x-account", b"").decode(),
                    "age": int(headers.get(b"x-account-age", b"40")),
                }
            await self.app(scope, receive, send)

    def from_state(scope: MutableMapping[str, Any]) -> tuple[str, int | None] | None:
        account = scope.get("state", {}).get("account")
        return (account["id"], account["age"]) if account and account["id"] else None

    guardrail = GuardrailMiddleware(
        Upstream(body=ITEMS), policy=CALLABLE, registry=CollectorRegistry(), identify=from_state
    )
    client = client_for(SetState(guardrail))
    adult, minor = {"x-account": "erin"}, {"x-account": "finn", "x-account-age": "12"}
    for who in (adult, minor):
        response = await client.patch("/guardrail/v1/controls", headers={**who, **MERGE}, content=GRANT)
        assert response.status_code == 200
    assert shown(await client.get("/feed/x", headers=adult)) == ["personal", "popular"]
    # The age it gives makes a minor: nothing personalized, whatever was consented.
    assert shown(await client.get("/feed/x", headers=minor)) == ["popular"]


def test_a_callable_policy_without_identify_is_an_error_at_start_naming_the_fix() -> None:
    with pytest.raises(GuardrailError, match=r"no identify function was given; pass identify=fn"):
        GuardrailMiddleware(Upstream(), policy=CALLABLE, registry=CollectorRegistry())


@pytest.mark.parametrize("source", ["header", "scope"])
def test_identify_with_another_source_is_an_error_at_start(source: str) -> None:
    with pytest.raises(GuardrailError, match=rf"identity.source is {source}, so it would never be called"):
        GuardrailMiddleware(
            Upstream(),
            policy=make_policy(identity={"source": source}),
            registry=CollectorRegistry(),
            identify=from_session,
        )


def test_an_async_identify_is_refused_at_start() -> None:
    async def coroutine_function(scope: Any) -> tuple[str, int | None] | None:
        return None

    class AsyncCallable:
        async def __call__(self, scope: Any) -> tuple[str, int | None] | None:
            return None

    for identify in (coroutine_function, AsyncCallable()):
        with pytest.raises(GuardrailError, match="identify is async; identify must be a plain function"):
            GuardrailMiddleware(Upstream(), policy=CALLABLE, registry=CollectorRegistry(), identify=identify)  # type: ignore[arg-type]


async def test_identify_is_kept_across_reloads(client_for: ClientFactory) -> None:
    app, guardrail = behind_auth(from_session)
    client = client_for(app)
    guardrail.use_policy(make_policy(identity={"source": "callable"}, policy_id="second"))
    assert guardrail.policy.policy_id == "second"
    assert await whoami(client, {"x-session-user": "carol"}) == "carol"
    # A reload to another source with identify given is refused as it would be at start.
    with pytest.raises(GuardrailError, match="so it would never be called"):
        guardrail.use_policy(make_policy())
    assert guardrail.policy.policy_id == "second"


def _raises(scope: Any) -> tuple[str, int | None] | None:
    raise KeyError("alice-the-secret-id")


async def test_an_exception_in_identify_is_anonymous_and_logged_once_without_the_id(
    client_for: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = behind_auth(_raises)
    client = client_for(app)
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        for _ in range(3):
            assert await whoami(client, {"x-session-user": "carol"}) == 401
            response = await client.get("/feed/x", headers={"x-session-user": "carol"})
            assert response.status_code == 200
            assert shown(response) == ["popular"]
            assert "Traceback" not in response.text and "KeyError" not in response.text
    said = [record for record in caplog.records if "identify raised" in record.getMessage()]
    assert len(said) == 1
    assert "KeyError" in said[0].getMessage()
    assert said[0].exc_info is None
    assert "alice-the-secret-id" not in caplog.text


@pytest.mark.parametrize(
    ("returned", "user", "age"),
    [
        pytest.param(("alice", 30), "alice", 30, id="user-and-age"),
        pytest.param(("alice", None), "alice", None, id="no-age"),
        pytest.param(("alice", 0), "alice", 0, id="age-zero"),
        pytest.param(("alice", -1), "alice", None, id="negative-age"),
        pytest.param(("alice", True), "alice", None, id="bool-age"),
        pytest.param(("alice", 12.5), "alice", None, id="float-age"),
        pytest.param(("alice", "12"), "alice", None, id="str-age"),
        pytest.param(None, None, None, id="none"),
        pytest.param(("alice\u200b", 30), None, None, id="zero-width"),
        pytest.param(("alice\x00", 30), None, None, id="nul"),
        pytest.param((" alice", 30), None, None, id="edge-space"),
        pytest.param(("\ud800", 30), None, None, id="lone-surrogate"),
        pytest.param(("a" * 201, 30), None, None, id="too-long"),
        pytest.param(("", 30), None, None, id="empty"),
        pytest.param((42, 30), None, None, id="int-user"),
        pytest.param((b"alice", 30), None, None, id="bytes-user"),
        pytest.param("alice", None, None, id="bare-str"),
        pytest.param(("alice", 30, "x"), None, None, id="three-tuple"),
        pytest.param(["alice", 30], None, None, id="list"),
    ],
)
async def test_what_identify_returns_is_checked_like_every_id(returned: Any, user: str | None, age: int | None) -> None:
    guardrail = GuardrailMiddleware(
        Upstream(), policy=CALLABLE, registry=CollectorRegistry(), identify=lambda scope: returned
    )
    caller = await guardrail.guard.identity.caller({"type": "http", "headers": []})
    assert (caller.user, caller.age) == (user, age)


async def test_identify_returning_a_coroutine_is_anonymous_and_never_awaited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def later() -> tuple[str, int | None]:
        return ("alice", None)

    guardrail = GuardrailMiddleware(
        Upstream(),
        policy=CALLABLE,
        registry=CollectorRegistry(),
        identify=lambda scope: later(),  # type: ignore[arg-type,return-value]
    )
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        caller = await guardrail.guard.identity.caller({"type": "http", "headers": []})
    assert caller.user is None
    assert "identify returned an awaitable" in caplog.text
