"""Attacks on who the guardrail thinks is asking (docs/architecture.md §7): identity, age and forwarding headers from a
peer outside `trusted_proxies`, repeated or comma-joined identity headers, header names with `_`, ids that
trim into someone else's, IPv4-mapped peers, a JWT policy open to algorithm confusion, any object a host's
authentication leaves in `scope["user"]`, and anything a host's `identify` returns or raises.

Each attack runs against the sidecar in front of an upstream that records what it receives, and against
the middleware in process (the wrapped app records the scope it got)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from guardrail import GuardrailError, GuardrailMiddleware, PolicyError
from guardrail.policy.models import Policy
from tests.conftest import BASE_POLICY, ClientFactory, make_policy
from tests.sidecar.conftest import StartSidecar
from tests.sidecar.servers import RecordingUpstream, answer_each, scripted, serve_process, write_policy
from tests.upstream import Upstream, call, http_scope, item

Headers = list[tuple[str, str]]

ALICE = {"x-user-id": "alice"}
MERGE = {"content-type": "application/merge-patch+json"}
# Trusts only a network the tests' peer (127.0.0.1) is not in.
UNTRUSTING = {**BASE_POLICY["identity"], "trusted_proxies": ["10.0.0.0/8"]}
ITEMS = {"items": [item("personal", ["movies"], ["watch_history"]), item("popular", ["movies"], [])]}

# What a client claims about itself in headers only a trusted proxy may set.
CLAIMED = "198.51.100.66"
SPOOFED = {
    "x-user-id": "mallory",
    "x-user-age": "40",
    "forwarded": f"for={CLAIMED};host=evil.example;proto=https",
    "x-forwarded-for": CLAIMED,
    "x-forwarded-host": "evil.example",
    "x-forwarded-proto": "https",
    "x-forwarded-port": "8443",
    "x-forwarded-prefix": "/admin",
    "x-forwarded-server": "evil.example",
    "x-forwarded-ssl": "on",
    "x-real-ip": CLAIMED,
    "x-original-url": "/admin/users",
    "x-rewrite-url": "/admin/users",
    "x-original-host": "evil.example",
    "x-client-ip": CLAIMED,
    "true-client-ip": CLAIMED,
    "cf-connecting-ip": CLAIMED,
    "x-cluster-client-ip": CLAIMED,
}
SET_BY_THE_SIDECAR = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}


def guarded(app: Any, policy: Policy | None = None) -> GuardrailMiddleware:
    return GuardrailMiddleware(app, policy=policy or make_policy(), registry=CollectorRegistry())


async def whoami(client: httpx.AsyncClient, headers: Any) -> int | str:
    """The user the API sees, or its status code when it sees nobody."""
    response = await client.get("/guardrail/v1/controls", headers=headers)
    return str(response.json()["user"]) if response.status_code == 200 else response.status_code


async def grant(client: httpx.AsyncClient, user: str) -> None:
    response = await client.patch(
        "/guardrail/v1/controls",
        headers={"x-user-id": user, **MERGE},
        content=b'{"consent": {"personalization": "granted"}}',
    )
    assert response.status_code == 200


def names_seen(upstream: Upstream) -> set[str]:
    return {name.decode("latin-1") for name, _ in upstream.seen[-1]["headers"]}


def shown(response: httpx.Response) -> list[str]:
    return [entry["id"] for entry in response.json()["items"]]


# -- 1. identity and forwarding headers from an untrusted peer --------------------------------------


@pytest.mark.parametrize(
    ("path", "forwarded_for"),
    [
        pytest.param("/anything", ["127.0.0.1"], id="unguarded"),
        pytest.param("/feed/gzip", ["127.0.0.1"], id="guarded"),
        # Asked without identifying headers, and without the client's address either.
        pytest.param("/recommendations", [], id="guarded-non-personalized"),
    ],
)
async def test_the_sidecar_never_forwards_what_an_untrusted_peer_claims(
    start_sidecar: StartSidecar, upstream: RecordingUpstream, path: str, forwarded_for: list[str]
) -> None:
    sidecar = await start_sidecar(identity=UNTRUSTING)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        await client.get(path, headers=SPOOFED)
    seen = upstream.seen[-1]
    names = {name for name, _ in seen.headers}
    assert not names & (SPOOFED.keys() - SET_BY_THE_SIDECAR)
    # What the sidecar saw itself, not appended to the client's list.
    assert seen.header("x-forwarded-for") == forwarded_for
    assert seen.header("x-forwarded-proto") == ["http"]
    assert seen.header("x-forwarded-host") == [sidecar.url.removeprefix("http://")]
    everything = repr(seen.headers)
    for claim in ("mallory", CLAIMED, "evil.example", "/admin", "8443"):
        assert claim not in everything


@pytest.mark.parametrize("path", ["/anything", "/feed/x", "/recommendations"])
async def test_the_middleware_never_passes_what_an_untrusted_peer_claims(client_for: ClientFactory, path: str) -> None:
    upstream = Upstream()
    client = client_for(guarded(upstream), "203.0.113.9")
    await client.get(path, headers=SPOOFED)
    assert not names_seen(upstream) & SPOOFED.keys()


async def test_from_a_trusted_proxy_the_same_headers_pass_and_the_sidecar_appends_its_peer(
    start_sidecar: StartSidecar, upstream: RecordingUpstream, client_for: ClientFactory
) -> None:
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        await client.get("/anything", headers=SPOOFED)
    seen = upstream.seen[-1]
    for name, value in SPOOFED.items():
        if name not in SET_BY_THE_SIDECAR:
            assert seen.header(name) == [value]
    assert seen.header("x-forwarded-for") == [f"{CLAIMED}, 127.0.0.1"]
    assert seen.header("x-forwarded-proto") == ["https"]
    assert seen.header("x-forwarded-host") == ["evil.example"]

    app = Upstream()
    await client_for(guarded(app)).get("/anything", headers=SPOOFED)
    assert names_seen(app) >= SPOOFED.keys()


async def test_the_non_personalized_route_gets_no_forwarding_header_even_from_a_trusted_proxy(
    start_sidecar: StartSidecar, upstream: RecordingUpstream, client_for: ClientFactory
) -> None:
    # Each names the client or would steer the upstream back to the personalized route (X-Original-URL).
    forwarding = {name: value for name, value in SPOOFED.items() if not name.startswith("x-user-")}
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        await client.get("/recommendations", headers=forwarding)  # anonymous: not personalized
    seen = upstream.seen[-1]
    assert seen.path == "/recommendations/popular"
    assert not {name for name, _ in seen.headers} & (forwarding.keys() - {"x-forwarded-proto", "x-forwarded-host"})
    assert seen.header("x-forwarded-proto") == ["http"]
    assert seen.header("x-forwarded-host") == [sidecar.url.removeprefix("http://")]

    app = Upstream()
    await client_for(guarded(app)).get("/recommendations", headers=forwarding)
    assert app.seen[-1]["path"] == "/recommendations/popular"
    assert not names_seen(app) & forwarding.keys()


async def test_a_websocket_handshake_is_screened_too() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "websocket.close", "code": 1000})

    forged = [(b"x-user-id", b"mallory"), (b"x-forwarded-for", CLAIMED.encode()), (b"x_user_id", b"mallory")]
    scope = {**http_scope("/ws", headers=[*forged, (b"origin", b"https://app.example")]), "type": "websocket"}
    await call(guarded(app), {**scope, "client": ("203.0.113.9", 40000)})
    assert seen[0]["headers"] == [(b"origin", b"https://app.example")]


SECRET = "attack-test-secret-long-enough-for-every-hmac-" + "z" * 40
JWT_SETTINGS = {"key_env": "TEST_GUARDRAIL_JWT_KEY", "algorithms": ["HS256"]}


def token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 300, **claims}, key, algorithm=algorithm)


async def test_with_jwt_the_token_reaches_the_upstream_but_claimed_user_and_age_headers_do_not(
    start_sidecar: StartSidecar, upstream: RecordingUpstream, client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_GUARDRAIL_JWT_KEY", SECRET)
    identity = {**UNTRUSTING, "source": "jwt", "jwt": JWT_SETTINGS}
    headers = {**SPOOFED, "authorization": f"Bearer {token()}"}
    sidecar = await start_sidecar(identity=identity)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        assert await whoami(client, headers) == "alice"
        await client.get("/anything", headers=headers)
    seen = upstream.seen[-1]
    assert seen.header("authorization") == [headers["authorization"]]
    assert not {name for name, _ in seen.headers} & (SPOOFED.keys() - SET_BY_THE_SIDECAR)

    app = Upstream()
    await client_for(guarded(app, make_policy(identity=identity)), "203.0.113.9").get("/anything", headers=headers)
    assert "authorization" in names_seen(app)
    assert not names_seen(app) & SPOOFED.keys()


# -- 2. two identity headers, two identities ----------------------------------------------------------

REPEATED: list[Any] = [
    pytest.param([("x-user-id", "alice"), ("x-user-id", "mallory")], id="two-ids"),
    pytest.param([("x-user-id", "mallory"), ("x-user-id", "alice")], id="two-ids-swapped"),
    pytest.param([("x-user-id", "alice, mallory")], id="comma-joined-ids"),
    pytest.param([("x-user-id", "alice"), ("x-user-id", "alice")], id="the-same-id-twice"),
    pytest.param([("x-user-id", "alice"), ("x-user-age", "30"), ("x-user-age", "15")], id="two-ages"),
    pytest.param([("x-user-id", "alice"), ("x-user-age", "30,15")], id="comma-joined-ages"),
]


@pytest.mark.parametrize("headers", REPEATED)
async def test_a_repeated_or_joined_identity_header_is_anonymous_on_every_surface(
    client_for: ClientFactory, headers: Headers
) -> None:
    app = Upstream(body=ITEMS)
    client = client_for(guarded(app))
    await grant(client, "alice")
    await grant(client, "mallory")
    assert await whoami(client, headers) == 401
    assert (await client.get("/guardrail/controls", headers=headers)).status_code == 401
    # Anonymous on the guarded route: the non-personalized route, without the ids.
    response = await client.get("/recommendations", headers=headers)
    assert app.seen[-1]["path"] == "/recommendations/popular"
    assert shown(response) == ["popular"]
    # The app is not told either claim on a route the guardrail does not check.
    await client.get("/anything", headers=headers)
    assert not names_seen(app) & {"x-user-id", "x-user-age"}


@pytest.mark.parametrize("headers", REPEATED)
async def test_the_sidecar_treats_a_repeated_identity_header_as_anonymous_and_forwards_neither(
    start_sidecar: StartSidecar, upstream: RecordingUpstream, headers: Headers
) -> None:
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        assert await whoami(client, headers) == 401
        await client.get("/anything", headers=headers)
    assert not {name for name, _ in upstream.seen[-1].headers} & {"x-user-id", "x-user-age"}


# -- 3. header names with `_` --------------------------------------------------------------------------

UNDERSCORED = [("transfer_encoding", "chunked"), ("content_length", "0"), ("x_user_id", "alice"), ("x_user_age", "9")]


async def test_header_names_with_underscores_never_reach_the_upstream(start_sidecar: StartSidecar) -> None:
    async with scripted(answer_each) as raw:
        sidecar = await start_sidecar(upstream_url=raw.url, identity=UNTRUSTING)
        async with httpx.AsyncClient(base_url=sidecar.url) as client:
            # The raw upstream answers `hello` as text: passed through on an unguarded path, unchecked (so
            # refused in closed mode) on a guarded one. Either way the request went upstream.
            for path, status in (("/anything", 200), ("/feed/x", 502)):
                response = await client.get(path, headers=UNDERSCORED)
                assert response.status_code == status
    assert len(raw.heads) == 2
    for head in raw.heads:
        assert b"_" not in head.split(b"\r\n", 1)[1]  # no header line names one (nor carries a value with one)


@pytest.mark.parametrize("path", ["/anything", "/recommendations", "/guardrail/v1/controls"])
async def test_the_middleware_drops_header_names_with_underscores(client_for: ClientFactory, path: str) -> None:
    app = Upstream()
    client = client_for(guarded(app))
    response = await client.get(path, headers=UNDERSCORED)
    if path.startswith("/guardrail"):
        assert response.status_code == 401  # x_user_id is not x-user-id
    else:
        assert not any("_" in name for name in names_seen(app))


@pytest.mark.parametrize(("section", "key"), [("identity", "header"), ("identity", "age_header"), ("tcf", "header")])
def test_a_policy_naming_a_header_with_an_underscore_is_refused(section: str, key: str) -> None:
    # It would never be read: the guardrail drops such headers before reading any.
    with pytest.raises(PolicyError) as refused:
        make_policy(**{section: {**BASE_POLICY.get(section, {}), key: "x_user_id"}})
    assert [path for path, _ in refused.value.issues] == [f"{section}.{key}"]
    assert "x-user-id" in refused.value.report()


# -- 4. ids trimmed into someone else's -----------------------------------------------------------------

DISGUISED_IDS = [
    "alice\xa0",
    "\u3000alice",
    "alice\x1f",
    "\u200balice",
    "alice\u200d",
    "alice\u2028",
    " alice",
    "alice ",
]


@pytest.mark.parametrize("disguised", DISGUISED_IDS)
async def test_an_id_with_control_format_or_surrounding_space_characters_is_refused_not_trimmed(
    client_for: ClientFactory, disguised: str
) -> None:
    app = Upstream(body=ITEMS)
    client = client_for(guarded(app))
    await grant(client, "alice")
    headers = [(b"x-user-id", disguised.encode())]
    assert await whoami(client, headers) == 401
    assert shown(await client.get("/recommendations", headers=headers)) == ["popular"]


@pytest.mark.parametrize("disguised", ["alice\xa0", "\u3000alice", "\u200balice"])
async def test_the_sidecar_refuses_a_disguised_id_too(start_sidecar: StartSidecar, disguised: str) -> None:
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        assert await whoami(client, ALICE) == "alice"
        assert await whoami(client, [(b"x-user-id", disguised.encode())]) == 401


@pytest.mark.parametrize("disguised", ["alice\xa0", "\u3000alice", "alice\x1f", "\ufeffalice", "alice\t"])
async def test_a_jwt_subject_is_taken_as_signed_not_trimmed(
    client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch, disguised: str
) -> None:
    monkeypatch.setenv("TEST_GUARDRAIL_JWT_KEY", SECRET)
    client = client_for(guarded(Upstream(), make_policy(identity={"source": "jwt", "jwt": JWT_SETTINGS})))
    assert await whoami(client, {"authorization": f"Bearer {token()}"}) == "alice"
    assert await whoami(client, {"authorization": f"Bearer {token(sub=disguised)}"}) == 401


# -- 5. IPv4-mapped peers ---------------------------------------------------------------------------------


async def test_an_ipv4_mapped_peer_is_its_ipv4_address(client_for: ClientFactory) -> None:
    app = Upstream()
    middleware = guarded(app)  # trusts 127.0.0.1/32 and ::1/128
    assert await whoami(client_for(middleware, "::ffff:127.0.0.1"), ALICE) == "alice"
    untrusted = client_for(middleware, "::ffff:203.0.113.9")
    assert await whoami(untrusted, ALICE) == 401
    await untrusted.get("/anything", headers=SPOOFED)
    assert not names_seen(app) & SPOOFED.keys()


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [("10.1.2.3", True), ("::ffff:10.1.2.3", True), ("11.1.2.3", False), ("::ffff:11.1.2.3", False)],
)
async def test_an_ipv4_mapped_network_entry_matches_the_ipv4_peer(
    client_for: ClientFactory, peer: str, trusted: bool
) -> None:
    policy = make_policy(identity={**BASE_POLICY["identity"], "trusted_proxies": ["::ffff:10.0.0.0/104"]})
    assert await whoami(client_for(guarded(Upstream(), policy), peer), ALICE) == ("alice" if trusted else 401)


def test_guardrail_serve_on_an_ipv6_socket_trusts_an_ipv4_proxy(tmp_path: Path, upstream: RecordingUpstream) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    # Workers share one socket that uvicorn binds dual-stack: an IPv4 peer arrives IPv4-mapped.
    args = ("--config", str(policy), "--upstream", upstream.url, "--host", "::", "--workers", "2")
    with serve_process(*args) as serve:
        serve.wait_ready()
        # The sidecar's peer is ::ffff:127.0.0.1 here: the policy's 127.0.0.1/32.
        assert httpx.get(f"{serve.url}/guardrail/v1/controls", headers=ALICE, timeout=10).json()["user"] == "alice"
        httpx.get(f"{serve.url}/anything", headers={**ALICE, "x-forwarded-for": CLAIMED}, timeout=10)
    seen = upstream.seen[-1]
    assert seen.header("x-user-id") == ["alice"]
    assert seen.header("x-forwarded-for") == [f"{CLAIMED}, 127.0.0.1"]


# -- 6. JWT algorithm confusion -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithms", [["HS256", "RS256"], ["ES256", "HS512"], ["HS384", "EdDSA"]])
def test_a_policy_mixing_hmac_and_public_key_algorithms_is_refused(algorithms: list[str]) -> None:
    with pytest.raises(PolicyError) as refused:
        make_policy(identity={"source": "jwt", "jwt": {"algorithms": algorithms}})
    paths = [path for path, _ in refused.value.issues]
    assert paths == ["identity.jwt.algorithms"]
    assert "HMAC" in refused.value.report()


def public_pem(private: Any) -> str:
    encoded: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded.decode()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("algorithms", "key"),
    [
        pytest.param(["HS256"], public_pem(RSA_KEY), id="a-public-key-as-hmac-secret"),
        pytest.param(["RS256"], SECRET, id="a-secret-for-rsa"),
        pytest.param(["ES256"], public_pem(RSA_KEY), id="an-rsa-key-for-ec"),
    ],
)
def test_a_key_that_cannot_verify_a_listed_algorithm_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, algorithms: list[str], key: str
) -> None:
    monkeypatch.setenv("TEST_GUARDRAIL_JWT_KEY", key)
    policy = make_policy(identity={"source": "jwt", "jwt": {**JWT_SETTINGS, "algorithms": algorithms}})
    with pytest.raises(GuardrailError, match=r"TEST_GUARDRAIL_JWT_KEY cannot verify any of identity.jwt.algorithms"):
        guarded(Upstream(), policy)


async def test_a_token_for_a_listed_algorithm_the_key_does_not_fit_is_anonymous_not_a_server_error(
    client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TEST_GUARDRAIL_JWT_KEY", public_pem(RSA_KEY))
    policy = make_policy(identity={"source": "jwt", "jwt": {**JWT_SETTINGS, "algorithms": ["RS256", "ES256"]}})
    client = client_for(guarded(Upstream(body=ITEMS), policy))
    assert await whoami(client, {"authorization": f"Bearer {token(RSA_KEY, 'RS256')}"}) == "alice"
    ec_token = {"authorization": f"Bearer {token(EC_KEY, 'ES256', sub='mallory')}"}
    assert await whoami(client, ec_token) == 401
    assert shown(await client.get("/recommendations", headers=ec_token)) == ["popular"]
    # The operator learns at start which tokens the key cannot verify.
    assert "TEST_GUARDRAIL_JWT_KEY cannot verify ES256 tokens" in caplog.text


ALGORITHMS = ["HS256", "HS512", "RS256", "RS512", "PS256", "ES256", "ES512", "EdDSA", "none", "hs256", ""]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
CLAIMS = st.dictionaries(st.sampled_from(["sub", "exp", "nbf", "iat", "aud", "iss", "age"]), JSON)


def forge(algorithm: str, claims: dict[str, Any], signature: bytes) -> str:
    """A token as an attacker writes it: any algorithm named, any claims, any signature bytes."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = json.dumps({"alg": algorithm, "typ": "JWT"}).encode()
    return f"{part(header)}.{part(json.dumps(claims).encode())}.{part(signature)}"


@pytest.mark.parametrize(
    ("algorithms", "key"),
    [(["HS256"], SECRET), (["RS256", "RS512"], public_pem(RSA_KEY)), (["ES256"], public_pem(EC_KEY))],
)
def test_no_forged_token_is_a_server_error(monkeypatch: pytest.MonkeyPatch, algorithms: list[str], key: str) -> None:
    monkeypatch.setenv("TEST_GUARDRAIL_JWT_KEY", key)
    policy = make_policy(identity={"source": "jwt", "jwt": {**JWT_SETTINGS, "algorithms": algorithms}})
    identity = guarded(Upstream(), policy).guard.identity
    scope = {"client": ("203.0.113.9", 40000)}

    # The resolver answers every request's identity: an exception here is a 500 for the caller.
    @given(algorithm=st.sampled_from(ALGORITHMS), claims=CLAIMS, signature=st.binary(max_size=600))
    def forged_is_anonymous(algorithm: str, claims: dict[str, Any], signature: bytes) -> None:
        authorization = f"Bearer {forge(algorithm, claims, signature)}".encode()
        assert asyncio.run(identity.resolve(scope, {b"authorization": authorization})).user is None

    forged_is_anonymous()


# -- 7. whatever the host's authentication left in scope["user"] ------------------------------------------------


class DjangoLikeUser:
    """What Django's auth (or Channels' `AuthMiddlewareStack`) leaves: authenticated, an id in `pk`, a
    username, and none of Starlette's `identity` or `display_name`."""

    is_authenticated = True
    pk = 7

    def get_username(self) -> str:
        return "alice"


class Exploding:
    """A user whose every attribute raises, as a lazy user object can when its lookup fails."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"lookup of {name} failed for alice")


class AuthenticatedButExploding:
    is_authenticated = True

    @property
    def identity(self) -> str:
        raise LookupError("the session store is down")


class ExplodingTruth:
    """`is_authenticated` is a value whose truth raises (`bool()` on it)."""

    class _Truth:
        def __bool__(self) -> bool:
            raise ValueError("ambiguous")

    is_authenticated = _Truth()


class ExplodingStr:
    is_authenticated = True

    class _Id:
        def __str__(self) -> str:
            raise UnicodeError("no text for this id")

    identity = _Id()


class SurrogateId:
    is_authenticated = True
    identity = "alice\ud800"


class ExplodingAge:
    is_authenticated = True
    identity = "alice"

    @property
    def age(self) -> int:
        raise LookupError("age is not loaded for alice")


class DisplayNameOnly:
    is_authenticated = True
    display_name = "carol"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        pytest.param(DjangoLikeUser(), None, id="django-like"),
        pytest.param({"id": "alice", "is_authenticated": True}, None, id="dict"),
        pytest.param(object(), None, id="plain-object"),
        pytest.param("alice", None, id="str"),
        pytest.param(42, None, id="int"),
        pytest.param(Exploding(), None, id="every-attribute-raises"),
        pytest.param(AuthenticatedButExploding(), None, id="identity-raises"),
        pytest.param(ExplodingTruth(), None, id="truth-raises"),
        pytest.param(ExplodingStr(), None, id="str-raises"),
        pytest.param(SurrogateId(), None, id="lone-surrogate"),
        pytest.param(ExplodingAge(), None, id="age-raises"),
        pytest.param(DisplayNameOnly(), "carol", id="display-name-only"),
    ],
)
async def test_no_scope_user_is_a_server_error(
    client_for: ClientFactory, caplog: pytest.LogCaptureFixture, user: Any, expected: str | None
) -> None:
    """The scope source reads Starlette's user; any other object there is anonymous (or, with a usable
    `display_name`, that name), on the API and on a guarded route, and the log says so without the id."""

    class PutsUser:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app({**scope, "user": user}, receive, send)

    upstream = Upstream(body=ITEMS)
    client = client_for(PutsUser(guarded(upstream, make_policy(identity={"source": "scope"}))), "203.0.113.9")
    with caplog.at_level("WARNING", logger="guardrail"):
        for _ in range(2):
            assert await whoami(client, {}) == (expected or 401)
            response = await client.get("/recommendations")
            assert response.status_code == 200
    assert "alice" not in caplog.text
    assert "Traceback" not in caplog.text


def test_a_django_like_user_is_logged_once_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    identity = guarded(Upstream(), make_policy(identity={"source": "scope"})).guard.identity
    with caplog.at_level("WARNING", logger="guardrail"):
        for _ in range(3):
            assert asyncio.run(identity.caller({"headers": [], "user": DjangoLikeUser()})).user is None
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        "scope['user'] (a DjangoLikeUser) has neither identity nor display_name, so the caller is anonymous; "
        "use identity.source: callable to say which of its attributes is the user id"
    ]


# -- 8. what a host's identify returns ----------------------------------------------------------------------------

ANYTHING = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3) | st.tuples(inner),
    max_leaves=6,
)


def test_whatever_identify_returns_or_raises_is_a_caller_or_anonymous() -> None:
    returned: list[Any] = [None]

    def identify(scope: Any) -> Any:
        if isinstance(returned[0], BaseException):
            raise returned[0]
        return returned[0]

    policy = make_policy(identity={"source": "callable"})
    identity = GuardrailMiddleware(Upstream(), policy=policy, registry=CollectorRegistry(), identify=identify)
    resolver = identity.guard.identity

    @given(value=ANYTHING | st.sampled_from([ValueError("x"), KeyError("alice"), RecursionError(), MemoryError()]))
    def checked(value: Any) -> None:
        returned[0] = value
        caller = asyncio.run(resolver.caller({"headers": []}))
        if caller.user is not None:
            assert isinstance(value, tuple) and value[0] == caller.user
            assert caller.user.isprintable() and caller.user == caller.user.strip(" ")
        assert caller.age is None or (type(caller.age) is int and caller.age >= 0)

    checked()
