"""JWT keys from the issuer's key set (`identity.jwt.jwks_url`), against a real JWKS server on a free port that
rotates its keys: tokens from the old key verify before the rotation and a token from the new key after it
(one refetch); a withdrawn key stops verifying; a flood of made-up `kid`s costs at most one fetch per cooldown;
with the server down callers are anonymous and `/readyz` and the log say why; `leeway_seconds` at its edges."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware, PolicyError
from guardrail.jwks import KeySet
from guardrail.policy.loading import policy_from_mapping
from tests.conftest import BASE_POLICY, ClientFactory, make_policy
from tests.sidecar.servers import free_port
from tests.upstream import Upstream


class Issuer:
    """Signing keys by kid; the ones published are served at `url` by `JwksServer`."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []

    def new_key(self) -> str:
        kid = secrets.token_hex(4)
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def key_set(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": keys}

    def token(self, kid: str, sub: str = "alice", signer: str | None = None, **claims: Any) -> str:
        body = {"sub": sub, "exp": int(time.time()) + 300, **claims}
        key = self.keys[signer or kid]
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


class JwksServer:
    """A real HTTP server (stdlib, in a thread) serving the issuer's published keys; it counts requests and
    answers 503 while `down`."""

    def __init__(self, issuer: Issuer, port: int = 0) -> None:
        self.issuer = issuer
        self.requests = 0
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.down:
                    self.send_error(503)
                    return
                body = json.dumps(outer.issuer.key_set()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def issuer() -> Issuer:
    issuer = Issuer()
    issuer.published.append(issuer.new_key())
    return issuer


@pytest.fixture
def jwks(issuer: Issuer) -> Iterator[JwksServer]:
    server = JwksServer(issuer)
    yield server
    server.close()


def guarded(url: str, **jwt_settings: Any) -> GuardrailMiddleware:
    policy = make_policy(identity={"source": "jwt", "jwt": {"jwks_url": url, **jwt_settings}})
    return GuardrailMiddleware(Upstream(), policy=policy, registry=CollectorRegistry())


def keys_of(middleware: GuardrailMiddleware, cooldown: float | None = None) -> KeySet:
    keys = middleware.guard.identity.keys
    assert keys is not None
    if cooldown is not None:
        keys.cooldown = cooldown
    return keys


async def whoami(client: httpx.AsyncClient, token: str) -> int | str:
    response = await client.get("/guardrail/v1/controls", headers={"authorization": f"Bearer {token}"})
    return str(response.json()["user"]) if response.status_code == 200 else response.status_code


async def test_keys_rotate_old_verifies_before_new_after_and_a_withdrawn_key_stops(
    client_for: ClientFactory, issuer: Issuer, jwks: JwksServer
) -> None:
    middleware = guarded(jwks.url)
    keys = keys_of(middleware, cooldown=0)  # every unknown kid may refetch: the rotation is seen at once
    client = client_for(middleware)
    old = issuer.published[0]
    old_token = issuer.token(old)
    assert await whoami(client, old_token) == "alice"
    assert await whoami(client, old_token) == "alice"
    assert await whoami(client, issuer.token(old, sub="bob")) == "bob"
    assert jwks.requests == 1, "keys held are not fetched again"

    new = issuer.new_key()
    issuer.published.append(new)  # the issuer publishes its next key, then signs with it
    assert await whoami(client, issuer.token(new, sub="carol")) == "carol"
    assert jwks.requests == 2
    assert await whoami(client, old_token) == "alice", "both keys are published: both verify"

    issuer.published.remove(old)  # the old key is withdrawn
    assert await whoami(client, issuer.token(new, sub="dave")) == "dave"
    assert jwks.requests == 2
    keys.max_age = 0  # the key set is old now: refetched in the background, while it still verifies
    assert await whoami(client, issuer.token(new, sub="erin")) == "erin"
    assert keys.fetches == 3
    await keys.refresh()  # waits for the background fetch in flight
    keys.max_age = 600
    # The withdrawn key no longer verifies, even a token it verified before (and remembered).
    assert await whoami(client, old_token) == 401
    assert await whoami(client, issuer.token(new, sub="carol")) == "carol"


async def test_a_token_from_a_key_published_after_the_last_fetch_waits_for_one_refetch(
    client_for: ClientFactory, issuer: Issuer, jwks: JwksServer
) -> None:
    middleware = guarded(jwks.url)
    keys_of(middleware, cooldown=0)
    client = client_for(middleware)
    assert await whoami(client, issuer.token(issuer.published[0])) == "alice"
    issuer.published = [issuer.new_key()]  # rotated at once, with no overlap
    tokens = [issuer.token(issuer.published[0], sub=f"user{n}") for n in range(20)]
    seen = await asyncio.gather(*(whoami(client, token) for token in tokens))
    assert seen == [f"user{n}" for n in range(20)]
    assert jwks.requests == 2, "requests waiting for the same key share one fetch"


async def test_made_up_kids_cost_at_most_one_fetch_per_cooldown(
    client_for: ClientFactory, issuer: Issuer, jwks: JwksServer
) -> None:
    middleware = guarded(jwks.url)
    keys = keys_of(middleware, cooldown=3600)
    client = client_for(middleware)
    forged = [issuer.token(secrets.token_hex(8), signer=issuer.published[0]) for _ in range(50)]
    # Cold: the flood arrives before any key is held, all at once. They share the one fetch.
    assert set(await asyncio.gather(*(whoami(client, token) for token in forged))) == {401}
    assert jwks.requests == 1
    # A real token still verifies with the keys that one fetch brought.
    assert await whoami(client, issuer.token(issuer.published[0])) == "alice"
    # Warm: more made-up kids, and even a key really published since, wait for the cooldown.
    issuer.published.append(issuer.new_key())
    for token in [*forged, issuer.token(issuer.published[1], sub="late")]:
        assert await whoami(client, token) == 401
    assert jwks.requests == 1
    assert keys.fetches == 1
    # Once the cooldown is over, one refetch brings the new key.
    keys.cooldown = 0
    assert await whoami(client, issuer.token(issuer.published[1], sub="late")) == "late"
    assert jwks.requests == 2


async def test_a_kid_nobody_would_issue_is_not_fetched_for(
    client_for: ClientFactory, issuer: Issuer, jwks: JwksServer
) -> None:
    middleware = guarded(jwks.url)
    keys_of(middleware, cooldown=0)
    client = client_for(middleware)
    assert await whoami(client, issuer.token("k" * 300, signer=issuer.published[0])) == 401
    assert await whoami(client, issuer.token("", signer=issuer.published[0])) == 401
    assert jwks.requests == 0


async def test_with_the_key_set_down_callers_are_anonymous_and_readyz_and_the_log_say_why(
    client_for: ClientFactory, issuer: Issuer, jwks: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    jwks.down = True
    middleware = guarded(jwks.url)
    keys = keys_of(middleware, cooldown=0)
    client = client_for(middleware)
    token = issuer.token(issuer.published[0])
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        for _ in range(3):
            assert await whoami(client, token) == 401
            response = await client.get("/feed/x", headers={"authorization": f"Bearer {token}"})
            assert response.status_code in (200, 502)  # whatever the upstream says: no 500 from identity
        ready = await client.get("/guardrail/readyz")
    assert ready.status_code == 503
    assert ready.json()["jwt_keys"].startswith(f"error: no JWT keys from the key set at {jwks.url}: ")
    assert "503" in ready.json()["jwt_keys"]
    said = [record.getMessage() for record in caplog.records if "cannot fetch JWT keys" in record.getMessage()]
    assert len(said) == 1, "said once for each kind of failure"
    assert "tokens are anonymous until it answers" in said[0]
    assert keys.fetches >= 3

    jwks.down = False  # back: the next request fetches, and readiness recovers
    assert await whoami(client, token) == "alice"
    ready = await client.get("/guardrail/readyz")
    assert ready.status_code == 200
    assert ready.json()["jwt_keys"] == "ok"


async def test_nothing_listening_is_anonymous_too(client_for: ClientFactory, issuer: Issuer) -> None:
    middleware = guarded(f"http://127.0.0.1:{free_port()}/jwks.json")
    client = client_for(middleware)
    assert await whoami(client, issuer.token(issuer.published[0])) == 401
    ready = await client.get("/guardrail/readyz")
    assert ready.status_code == 503
    assert "jwt_keys" in ready.json()


async def test_readyz_fetches_the_keys_before_the_first_token(
    client_for: ClientFactory, issuer: Issuer, jwks: JwksServer
) -> None:
    client = client_for(guarded(jwks.url))
    ready = await client.get("/guardrail/readyz")
    assert ready.status_code == 200
    assert ready.json()["jwt_keys"] == "ok"
    assert jwks.requests == 1
    assert await whoami(client, issuer.token(issuer.published[0])) == "alice"
    assert jwks.requests == 1


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        pytest.param({"exp": -20}, True, id="expired-within-leeway"),
        pytest.param({"exp": -40}, False, id="expired-past-leeway"),
        pytest.param({"nbf": 20}, True, id="not-yet-valid-within-leeway"),
        pytest.param({"nbf": 40}, False, id="not-yet-valid-past-leeway"),
        pytest.param({"iat": 20}, True, id="issued-ahead-within-leeway"),
        pytest.param({"iat": 40}, False, id="issued-ahead-past-leeway"),
    ],
)
async def test_leeway_applies_to_exp_nbf_and_iat(
    client_for: ClientFactory, issuer: Issuer, jwks: JwksServer, claims: dict[str, int], accepted: bool
) -> None:
    client = client_for(guarded(jwks.url, leeway_seconds=30))
    now = int(time.time())
    times: dict[str, Any] = {name: now + offset for name, offset in claims.items()}
    token = issuer.token(issuer.published[0], **times)
    assert await whoami(client, token) == ("alice" if accepted else 401)
    # Without leeway, every one of them is refused.
    strict = client_for(guarded(jwks.url))
    assert await whoami(strict, token) == 401


async def test_the_policy_algorithms_still_decide(client_for: ClientFactory, issuer: Issuer, jwks: JwksServer) -> None:
    client = client_for(guarded(jwks.url, algorithms=["ES256"]))
    assert await whoami(client, issuer.token(issuer.published[0])) == 401


async def test_a_verified_token_is_remembered(client_for: ClientFactory, issuer: Issuer, jwks: JwksServer) -> None:
    middleware = guarded(jwks.url)
    client = client_for(middleware)
    token = issuer.token(issuer.published[0])
    assert await whoami(client, token) == "alice"
    tokens = middleware.guard.identity.tokens
    assert tokens is not None
    assert f"Bearer {token}".encode() in tokens._verified.data
    assert await whoami(client, token) == "alice"


# -- the policy ----------------------------------------------------------------------------------------


def problems(**jwt_settings: Any) -> dict[str, str]:
    data = {**BASE_POLICY, "identity": {"source": "jwt", "jwt": jwt_settings}}
    with pytest.raises(PolicyError) as raised:
        policy_from_mapping(data)
    return dict(raised.value.issues)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://issuer.example/jwks.json", "is http, not https, and its host is not loopback"),
        ("ftp://issuer.example/jwks.json", "is not an https URL"),
        ("file:///etc/jwks.json", "has no host"),
        ("https://user:pw@issuer.example/jwks.json", "has credentials in it"),
        ("https://issuer.example:port/jwks.json", "is not a URL"),
        ("jwks.json", "has no host"),
    ],
)
def test_a_key_set_url_must_be_https_unless_loopback(url: str, says: str) -> None:
    found = problems(jwks_url=url)
    assert says in found["identity.jwt.jwks_url"]


@pytest.mark.parametrize(
    "url",
    [
        "https://issuer.example/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://[::1]/k",
        "http://localhost/k",
    ],
)
def test_https_and_loopback_urls_are_accepted(url: str) -> None:
    data = {**BASE_POLICY, "identity": {"source": "jwt", "jwt": {"jwks_url": url}}}
    policy = policy_from_mapping(data)
    assert policy.identity.jwt is not None
    assert policy.identity.jwt.algorithms == ["RS256"], "a key set's keys are public: RS256 unless listed"


def test_a_key_set_and_a_key_are_mutually_exclusive() -> None:
    found = problems(jwks_url="https://issuer.example/jwks.json", key_env="MY_KEY")
    assert "jwks_url and key_env both name where the keys come from" in found["identity.jwt.key_env"]


def test_hmac_algorithms_with_a_key_set_are_refused() -> None:
    found = problems(jwks_url="https://issuer.example/jwks.json", algorithms=["HS256"])
    assert "an HMAC secret must never be published" in found["identity.jwt.algorithms"]


def test_leeway_is_bounded() -> None:
    found = problems(jwks_url="https://issuer.example/jwks.json", leeway_seconds=-1)
    assert "identity.jwt.leeway_seconds" in found
    assert "identity.jwt.leeway_seconds" in problems(key_env="K", leeway_seconds=3600)
