"""Identity only from the configured trusted source (docs/architecture.md §7, issue 4): header from trusted
proxies, verified JWTs, or Starlette's authenticated user. Everything else is anonymous."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Mount

from guardrail import GuardrailError, GuardrailMiddleware
from tests.conftest import BASE_POLICY, ClientFactory, make_policy
from tests.upstream import Upstream, item

SECRET = "test-secret-long-enough-for-hs256-and-hs512-" + "x" * 40
ITEMS = {"items": [item("a", ["movies"], ["watch_history"]), item("b", ["health"], []), item("c", ["movies"], [])]}


def jwt_policy(**jwt_settings: Any) -> Any:
    settings = {"key_env": "TEST_GUARDRAIL_JWT_KEY", "algorithms": ["HS256"], "audience": "recs", "issuer": "auth"}
    settings.update(jwt_settings)
    return make_policy(identity={"source": "jwt", "jwt": settings})


def token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    body = {"sub": "alice", "aud": "recs", "iss": "auth", "exp": int(time.time()) + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm)


def unsigned_token() -> str:
    """A token with `alg: none` and no signature, built by hand as an attacker would."""
    import base64

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"sub": "alice", "aud": "recs", "iss": "auth", "exp": int(time.time()) + 300}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


@pytest.fixture
def jwt_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_GUARDRAIL_JWT_KEY", SECRET)


async def whoami(client: httpx.AsyncClient, headers: dict[str, str]) -> int | str:
    response = await client.get("/guardrail/v1/controls", headers=headers)
    return str(response.json()["user"]) if response.status_code == 200 else response.status_code


@pytest.mark.usefixtures("jwt_key")
async def test_a_valid_token_identifies_the_user(client_for: ClientFactory) -> None:
    client = client_for(
        GuardrailMiddleware(Upstream(), policy=jwt_policy(), registry=CollectorRegistry()), "198.51.100.7"
    )
    assert await whoami(client, bearer(token())) == "alice"
    assert await whoami(client, bearer(token(sub="bob"))) == "bob"


@pytest.mark.usefixtures("jwt_key")
@pytest.mark.parametrize(
    ("make_token", "why"),
    [
        (lambda: token(exp=int(time.time()) - 10), "expired"),
        (lambda: token(exp=None), "no exp"),
        (lambda: token(aud="other"), "wrong audience"),
        (lambda: token(iss="someone-else"), "wrong issuer"),
        (lambda: token(key="not-the-key-but-long-enough-to-sign-with-hs256"), "wrong key"),
        (lambda: unsigned_token(), "alg none"),
        (lambda: token(algorithm="HS512"), "an algorithm the policy does not allow"),
        (lambda: token() + "x", "a tampered signature"),
        (lambda: "not.a.token", "garbage"),
    ],
)
async def test_bad_tokens_are_anonymous(client_for: ClientFactory, make_token: Any, why: str) -> None:
    middleware = GuardrailMiddleware(Upstream(body=ITEMS), policy=jwt_policy(), registry=CollectorRegistry())
    client = client_for(middleware)
    headers = bearer(make_token())
    assert await whoami(client, headers) == 401, why
    # On a guarded route the caller gets nothing personal.
    response = await client.get("/recommendations", headers=headers)
    assert [entry["id"] for entry in response.json()["items"]] == ["b", "c"], why


@pytest.mark.usefixtures("jwt_key")
async def test_the_policy_fixes_the_algorithm_not_the_token(
    client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    monkeypatch.setenv("TEST_GUARDRAIL_JWT_KEY", public_pem)
    client = client_for(
        GuardrailMiddleware(Upstream(), policy=jwt_policy(algorithms=["RS256"]), registry=CollectorRegistry())
    )
    assert await whoami(client, bearer(token(key=private, algorithm="RS256"))) == "alice"
    # A token that names an algorithm the policy does not list is refused, whatever its signature.
    forged = token(key="a-shared-secret-someone-guessed-" + "y" * 32, sub="mallory")
    assert await whoami(client, bearer(forged)) == 401


@pytest.mark.usefixtures("jwt_key")
async def test_the_age_claim_makes_a_minor(client_for: ClientFactory) -> None:
    middleware = GuardrailMiddleware(
        Upstream(body=ITEMS), policy=jwt_policy(age_claim="age"), registry=CollectorRegistry()
    )
    client = client_for(middleware)
    await client.patch(
        "/guardrail/v1/controls",
        headers={**bearer(token()), "content-type": "application/merge-patch+json"},
        content=b'{"consent": {"personalization": "granted"}}',
    )
    adult = await client.get("/recommendations", headers=bearer(token(age=30)))
    minor = await client.get("/recommendations", headers=bearer(token(age=15)))
    assert [entry["id"] for entry in adult.json()["items"]] == ["a", "b", "c"]
    assert [entry["id"] for entry in minor.json()["items"]] == ["c"]
    assert minor.json()["guardrail"]["notice"] == "We hid 2 suggestions to keep young people safe."


def test_a_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_GUARDRAIL_JWT_KEY", raising=False)
    with pytest.raises(GuardrailError, match="TEST_GUARDRAIL_JWT_KEY is not set"):
        GuardrailMiddleware(Upstream(), policy=jwt_policy(), registry=CollectorRegistry())


class HeaderAuth(AuthenticationBackend):
    """The service's own authentication; the guardrail only reads the user it leaves in the scope."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-session-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


async def test_scope_source_uses_the_authenticated_user(client_for: ClientFactory) -> None:
    policy = make_policy(identity={"source": "scope"})
    guarded = GuardrailMiddleware(Upstream(), policy=policy, registry=CollectorRegistry())
    app = Starlette(
        routes=[Mount("/", app=guarded)], middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())]
    )
    client = client_for(app, "203.0.113.5")
    assert await whoami(client, {"x-session-user": "carol"}) == "carol"
    assert await whoami(client, {}) == 401
    # The header source's header means nothing here.
    assert await whoami(client, {"x-user-id": "mallory"}) == 401


async def test_header_source_ignores_untrusted_peers(client_for: ClientFactory) -> None:
    middleware = GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry())
    assert await whoami(client_for(middleware, "127.0.0.1"), {"x-user-id": "alice"}) == "alice"
    assert await whoami(client_for(middleware, "::1"), {"x-user-id": "alice"}) == "alice"
    assert await whoami(client_for(middleware, "10.1.2.3"), {"x-user-id": "alice"}) == 401
    wide = make_policy(identity={**BASE_POLICY["identity"], "trusted_proxies": ["10.0.0.0/8"]})
    assert (
        await whoami(
            client_for(GuardrailMiddleware(Upstream(), policy=wide, registry=CollectorRegistry()), "10.1.2.3"),
            {"x-user-id": "alice"},
        )
        == "alice"
    )


@pytest.mark.parametrize("bad", ["", " ", "a" * 201, "tab\\there"])
async def test_unusable_user_ids_are_anonymous(client_for: ClientFactory, bad: str) -> None:
    middleware = GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry())
    value = bad.replace("\\t", "\t")
    assert await whoami(client_for(middleware), {"x-user-id": value}) == 401
