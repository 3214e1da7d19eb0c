"""The OpenAPI document of the JSON API (docs/api.md): valid, complete, true to the policy and to the server."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import orjson
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail import GuardrailMiddleware
from guardrail.engine import Reason
from guardrail.routes import GPC_PATH
from guardrail.web.openapi import openapi_document
from tests.conftest import BASE_POLICY, make_policy
from tests.upstream import Upstream

OPENAPI_PATH = "/guardrail/v1/openapi.json"
USER = {"x-user-id": "alice"}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item if method in _METHODS}


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document(make_policy())
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema


async def test_served_publicly_as_json(client: httpx.AsyncClient, app: GuardrailMiddleware) -> None:
    response = await client.get(OPENAPI_PATH)  # no identity
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == orjson.loads(orjson.dumps(openapi_document(app.policy)))
    wrong = await client.post(OPENAPI_PATH)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"


async def test_lists_exactly_the_operations_the_api_serves(client: httpx.AsyncClient, app: GuardrailMiddleware) -> None:
    # Ask each route the API serves which methods it allows: a method none of them allow answers 405 with `Allow`.
    served: set[tuple[str, str]] = set()
    for route in app._served.management.routes:  # type: ignore[attr-defined]
        if route.path.startswith(("/guardrail/controls", "/guardrail/why/")) or route.path == GPC_PATH:
            # Neither the HTML pages nor the GPC statement are part of the JSON API the document describes
            # (docs/architecture.md §7).
            continue
        probe = route.path.replace("{decision_id}", "d1").replace("{item_id:path}", "m1")
        response = await client.request("OPTIONS", probe, headers=USER)
        assert response.status_code == 405, route.path
        path = route.path.replace("{item_id:path}", "{item_id}")  # OpenAPI has no path converters
        served |= {(method.strip(), path) for method in response.headers["allow"].split(",")}
    assert operations(openapi_document(app.policy)) == served
    assert ("GET", "/guardrail/v1/openapi.json") in served


def test_public_operations_need_no_identity() -> None:
    document = openapi_document(make_policy())
    public = {
        path
        for path, item in document["paths"].items()
        if any(operation.get("security") == [] for operation in item.values())
    }
    assert public == {"/guardrail/healthz", "/guardrail/readyz", "/guardrail/v1/openapi.json"}
    assert document["security"] == [{"identity": []}]
    assert document["components"]["securitySchemes"]["identity"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-user-id",
        "description": document["components"]["securitySchemes"]["identity"]["description"],
    }
    for path, item in document["paths"].items():
        for operation in item.values():
            if path not in public:
                assert "401" in operation["responses"], path


def test_identity_source_follows_the_policy() -> None:
    jwt = make_policy(identity={"source": "jwt", "jwt": {"key_env": "UNUSED_KEY"}})
    document = openapi_document(jwt)
    validate(document)
    assert document["components"]["securitySchemes"]["identity"]["type"] == "http"
    assert document["components"]["securitySchemes"]["identity"]["scheme"] == "bearer"
    renamed = openapi_document(make_policy(identity={"source": "header", "header": "X-Remote-User"}))
    assert renamed["components"]["securitySchemes"]["identity"]["name"] == "x-remote-user"
    scope = openapi_document(make_policy(identity={"source": "scope"}))
    validate(scope)
    assert "securitySchemes" not in scope["components"] and "security" not in scope


def test_enums_follow_the_policy() -> None:
    schemas = openapi_document(make_policy())["components"]["schemas"]
    controls = schemas["Controls"]["properties"]
    assert controls["signals"]["propertyNames"]["enum"] == sorted(BASE_POLICY["signals"])
    assert controls["consent"]["propertyNames"]["enum"] == ["measurement", "personalization", "sharing"]
    assert controls["consent"]["additionalProperties"] == {"enum": ["granted", "denied"]}
    assert controls["muted"]["propertyNames"]["enum"] == sorted(BASE_POLICY["categories"])
    # health.fitness opts out of its parent's sensitivity
    assert controls["sensitive"]["propertyNames"]["enum"] == ["dating", "gambling", "health", "health.pregnancy"]
    assert controls["locale"]["enum"] == ["en", "ko", None]
    patch = schemas["ControlsPatch"]
    assert patch["additionalProperties"] is False
    assert patch["properties"]["signals"]["additionalProperties"] == {"type": ["boolean", "null"]}
    item = schemas["DecisionItem"]["properties"]
    assert item["action"]["enum"] == ["keep", "discreet", "hide"]
    assert item["reasons"]["items"]["enum"] == [reason.value for reason in Reason]
    assert len(item["reasons"]["items"]["enum"]) == 12

    other = make_policy(
        locales=["en"],
        purposes={"personalization": {"default": "granted"}},
        signals={
            "watch_history": {"purpose": "personalization", "label": {"en": "what you watched"}},
            "heart_rate": {"purpose": "personalization", "sensitivity": 3, "label": {"en": "your heart rate"}},
        },
        categories={"news": {"label": {"en": "news"}}},
    )
    document = openapi_document(other)
    validate(document)
    controls = document["components"]["schemas"]["Controls"]["properties"]
    assert controls["signals"]["propertyNames"]["enum"] == ["heart_rate", "watch_history"]
    assert controls["consent"]["propertyNames"]["enum"] == ["personalization"]
    assert controls["muted"]["propertyNames"]["enum"] == ["news"]
    assert controls["locale"]["enum"] == ["en", None]
    # no sensitive category: nothing may be set (an empty enum is not valid JSON Schema)
    assert controls["sensitive"] == {**controls["sensitive"], "type": "object", "maxProperties": 0}
    assert "propertyNames" not in controls["sensitive"]


def test_paths_follow_the_prefix() -> None:
    document = openapi_document(make_policy(prefix="/me/privacy"))
    assert all(path.startswith("/me/privacy/") for path in document["paths"])
    assert "/me/privacy/v1/decisions/{decision_id}" in document["paths"]


def test_memoized_per_policy() -> None:
    policy = make_policy()
    assert openapi_document(policy) is openapi_document(policy)
    assert openapi_document(make_policy()) is not openapi_document(policy)


# -- the server against its own document (schemathesis, in process) ------------------------------


def from_localhost(app: ASGIApp) -> ASGIApp:
    """Schemathesis's ASGI client calls itself "testclient", which is not an address and so never a
    trusted proxy (policy `trusted_proxies` take only networks): present its requests as local ones.
    It also runs the lifespan protocol, which the test upstream does not speak: answer it here."""

    async def local(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await app({**scope, "client": ("127.0.0.1", 50000)}, receive, send)

    return local


FUZZED = GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry())
schema = schemathesis.openapi.from_asgi(OPENAPI_PATH, from_localhost(FUZZED))
schema.config.generation.update(max_examples=30, deterministic=True, database="none", with_security_parameters=False)
CALLS = itertools.count()
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_server_keeps_to_its_document(case: schemathesis.Case[Any]) -> None:
    # A few users in turn: their controls build up (so GET returns more than the defaults), and
    # none of them reaches the per-user change rate limit, which would turn every later change into a 429.
    call = next(CALLS)
    if call % 2 and case.headers:
        # A generated If-Match is almost never the current revision (412): send half the changes
        # unconditionally, so that their bodies reach validation and the store.
        case.headers.pop("If-Match", None)
    case.call_and_validate(headers={"x-user-id": f"user-{call % 10}"}, checks=CHECKS)


def test_a_real_decision_matches_its_schema() -> None:
    # The fuzzed ids above are (almost) never real: read one the middleware recorded.
    with asgi.get_client(schema.app) as client:  # the app the schema was loaded from
        assert client.get("/recommendations", headers=USER).status_code == 200
        listed = schema["/guardrail/v1/decisions"]["GET"].Case(headers=USER).call_and_validate(checks=CHECKS)
    decisions = listed.json()["decisions"]
    assert decisions, "the guarded request was recorded"
    one = schema["/guardrail/v1/decisions/{decision_id}"]["GET"].Case(
        path_parameters={"decision_id": decisions[0]["decision"]}, headers=USER
    )
    response = one.call_and_validate(checks=CHECKS)
    assert response.status_code == 200
    assert {item["action"] for item in response.json()["items"]} >= {"keep", "hide"}


def test_a_real_export_matches_its_schema() -> None:
    with asgi.get_client(schema.app) as client:
        assert client.get("/recommendations", headers=USER).status_code == 200
    response = schema["/guardrail/v1/export"]["GET"].Case(headers=USER).call_and_validate(checks=CHECKS)
    assert response.status_code == 200
    assert response.json()["decisions"] and response.json()["reasons"], "the export has records and reasons"


def test_stored_controls_and_anonymous_callers_match_the_document() -> None:
    operation = schema["/guardrail/v1/controls"]["GET"]
    # The users the fuzzing above changed (if it ran first), and one who never changed anything.
    for user in [*(f"user-{n}" for n in range(10)), "nobody"]:
        response = operation.Case(headers={"x-user-id": user}).call_and_validate(checks=CHECKS)
        assert response.status_code == 200
    anonymous = operation.Case().call_and_validate(checks=CHECKS)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == ["application/problem+json"]


def test_the_review_endpoints_are_documented_when_the_policy_names_reviewers() -> None:
    plain = openapi_document(make_policy())
    assert not [path for path in plain["paths"] if "/review/" in path]
    document = openapi_document(make_policy(review={"reviewers": ["staff-1"]}))
    assert ("POST", "/guardrail/v1/review/{entry}") in operations(document)
    assert {("GET", "/guardrail/v1/review/queue"), ("GET", "/guardrail/v1/review/audit")} <= operations(document)
    request = document["components"]["schemas"]["ReviewRequest"]
    assert request["required"] == ["decision", "note"]
    assert request["properties"]["label"]["required"] == ["en", "ko"]
    validate(document)
