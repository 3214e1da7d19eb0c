"""The OpenAPI 3.1 document of the JSON API (docs/architecture.md §7), built from the policy it serves.

The maps in the controls are keyed by the policy's own purposes, signals and categories, so the
document names them (`propertyNames`): a client generated from it knows what it may send, and a
change of policy gives a new document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from guardrail.policy.models import Policy
from guardrail.web.controls_api import PATCH_TYPES
from guardrail.web.openapi_items import item_paths, item_schemas
from guardrail.web.openapi_review import review_paths, review_schemas
from guardrail.web.openapi_schemas import schemas
from guardrail.web.problem import PROBLEM_JSON

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "identity"
# A policy is swapped rarely and each swap builds one API; a few entries cover every live one.
# The policy is kept with its document, so an `id` cannot be reused while its entry lives.
_CACHE_SIZE = 8
_cache: dict[int, tuple[Policy, dict[str, Any]]] = {}

JSON = "application/json"
# What `controls_api.parse_if_match` understands; anything else is answered 412.
IF_MATCH_PATTERN = r'^\s*(\*|(W/)?"[0-9]+")\s*$'


def openapi_document(policy: Policy) -> dict[str, Any]:
    """The document for this policy; the same (shared, do not change it) object for the same policy."""
    cached = _cache.get(id(policy))
    if cached is not None and cached[0] is policy:
        return cached[1]
    document = _build(policy)
    if len(_cache) >= _CACHE_SIZE:
        del _cache[next(iter(_cache))]
    _cache[id(policy)] = (policy, document)
    return document


def openapi_endpoint(policy: Policy) -> Callable[[Request], Awaitable[Response]]:
    """`GET {prefix}/v1/openapi.json`: public, encoded once."""
    body = orjson.dumps(openapi_document(policy))

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type=JSON)

    return endpoint


# -- the document ------------------------------------------------------------------------------


def _build(policy: Policy) -> dict[str, Any]:
    from guardrail._version import __version__

    prefix = policy.prefix or ""
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "guardrail personalization controls",
            "version": __version__,
            "summary": f"Your personalization controls and decision receipts under policy {policy.policy_id}.",
            "description": (
                "Read and change your personalization controls, ask why a recommendation was kept or hidden, "
                "act on one item (mute its topic, turn off a signal it used, report it), "
                "and download everything stored about you. "
                "Errors are RFC 9457 problem details (application/problem+json) with a human-readable `detail`. "
                f"Valid keys and values follow the policy `{policy.policy_id}`."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": {**_paths(prefix), **item_paths(prefix, _RESPONSE_NAMES)},
        "components": {
            "schemas": {**schemas(policy), **item_schemas()},
            "responses": _responses(),
            "headers": _headers(),
            "parameters": {
                "IfMatch": {
                    "name": "If-Match",
                    "in": "header",
                    "required": False,
                    "description": (
                        'The ETag from a GET, such as "7": the change is applied only if nobody changed the controls '
                        'since (412 otherwise). "*" or no header: apply whatever the revision.'
                    ),
                    "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
                },
            },
        },
    }
    if policy.review is not None:
        document["paths"].update(review_paths(prefix))
        document["components"]["schemas"].update(review_schemas(policy.locales))
    scheme = _security_scheme(policy)
    if scheme is not None:
        document["components"]["securitySchemes"] = {SECURITY_SCHEME: scheme}
        document["security"] = [{SECURITY_SCHEME: []}]
    return document


def _security_scheme(policy: Policy) -> dict[str, Any] | None:
    identity = policy.identity
    if identity.source == "header":
        return {
            "type": "apiKey",
            "in": "header",
            "name": identity.header,
            "description": (
                "The user id, set by a trusted proxy: the header counts only when the request comes from one of "
                "the policy's trusted proxies; from anyone else the caller is anonymous (401)."
            ),
        }
    if identity.source == "jwt":
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A signed token whose `sub` claim is the user id and which has an `exp` claim.",
        }
    # `scope` and `callable`: whatever authentication the host application does (a session cookie, a token...),
    # which guardrail cannot describe; the 401 responses still say that it is needed.
    return None


def _paths(prefix: str) -> dict[str, Any]:
    public: dict[str, Any] = {"security": [], "tags": ["health"]}
    return {
        f"{prefix}/healthz": {
            "get": {
                **public,
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {"200": _json_response("Alive.", {"$ref": "#/components/schemas/Health"})},
            }
        },
        f"{prefix}/readyz": {
            "get": {
                **public,
                "operationId": "readyz",
                "summary": "Readiness: the policy is loaded, the store answers (and the sidecar's upstream)",
                "responses": {
                    "200": _json_response("Ready.", {"$ref": "#/components/schemas/Readiness"}),
                    "503": _json_response(
                        "The store (or the sidecar's upstream) does not answer.",
                        {"$ref": "#/components/schemas/Readiness"},
                    ),
                },
            }
        },
        f"{prefix}/v1/openapi.json": {
            "get": {
                "security": [],
                "tags": ["meta"],
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json_response("The OpenAPI document.", {"type": "object"})},
            }
        },
        f"{prefix}/v1/controls": {
            "get": {
                "tags": ["controls"],
                "operationId": "getControls",
                "summary": "Your controls (the policy's defaults if you never changed anything)",
                "responses": {
                    "200": _controls_response("Your controls."),
                    **_refs("401", "503"),
                },
            },
            "patch": {
                "tags": ["controls"],
                "operationId": "patchControls",
                "summary": "Change your controls with a JSON merge patch (RFC 7386)",
                "description": (
                    "Every map merges key by key; a key set to null is removed, a map set to null is cleared. "
                    "Either the whole change is applied or nothing is."
                ),
                "parameters": [{"$ref": "#/components/parameters/IfMatch"}],
                "requestBody": {
                    "required": True,
                    "content": {
                        media: {"schema": {"$ref": "#/components/schemas/ControlsPatch"}} for media in PATCH_TYPES
                    },
                },
                "responses": {
                    "200": _controls_response("Your controls after the change."),
                    **_refs("400", "401", "412", "413", "415", "422", "429", "503"),
                },
            },
            "delete": {
                "tags": ["controls"],
                "operationId": "eraseControls",
                "summary": "Erase your controls and decision receipts",
                "responses": {
                    "204": {"description": "Erased: the policy's defaults apply again."},
                    **_refs("401", "429", "503"),
                },
            },
        },
        f"{prefix}/v1/decisions": {
            "get": {
                "tags": ["decisions"],
                "operationId": "listDecisions",
                "summary": "Your recent decisions, newest first",
                "responses": {
                    "200": _json_response("Your recent decisions.", {"$ref": "#/components/schemas/DecisionList"}),
                    **_refs("401", "503"),
                },
            }
        },
        f"{prefix}/v1/decisions/{{decision_id}}": {
            "get": {
                "tags": ["decisions"],
                "operationId": "getDecision",
                "summary": "One of your decisions, item by item, with the reasons in plain language",
                "parameters": [
                    {
                        "name": "decision_id",
                        "in": "path",
                        "required": True,
                        "description": "The `decision` of a summary (also sent as the `guardrail-decision` header).",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json_response("The decision.", {"$ref": "#/components/schemas/Decision"}),
                    **_refs("401", "404", "503"),
                },
            }
        },
        f"{prefix}/v1/export": {
            "get": {
                "tags": ["export"],
                "operationId": "exportData",
                "summary": "Everything stored about you, as one JSON file to download",
                "description": (
                    "The answer to a GDPR access (Art. 15) or portability (Art. 20) request: your controls, every "
                    "decision record kept about you with each item explained, what each reason code used means, "
                    "and your reports, in your language (your `locale` control, else Accept-Language, else the "
                    "policy's default)."
                ),
                "responses": {
                    "200": {
                        **_json_response("Your data.", {"$ref": "#/components/schemas/Export"}),
                        "headers": {
                            "Content-Disposition": {
                                "description": 'Always `attachment; filename="guardrail-export.json"`.',
                                "required": True,
                                "schema": {"type": "string"},
                            },
                            "Cache-Control": {
                                "description": "Always `no-store`.",
                                "required": True,
                                "schema": {"const": "no-store"},
                            },
                        },
                    },
                    **_refs("401", "503"),
                },
            }
        },
    }


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _controls_response(description: str) -> dict[str, Any]:
    response = _json_response(description, {"$ref": "#/components/schemas/Controls"})
    response["headers"] = {"ETag": {"$ref": "#/components/headers/ETag"}}
    return response


def _refs(*statuses: str) -> dict[str, Any]:
    return {status: {"$ref": f"#/components/responses/{_RESPONSE_NAMES[status]}"} for status in statuses}


# status: (component name, description, headers)
_ERRORS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "400": ("BadRequest", "The body is not valid JSON.", ()),
    "401": ("Unauthorized", "The request did not say who you are.", ()),
    "404": ("NotFound", "You have no such decision or item (or it is someone else's).", ()),
    "412": (
        "PreconditionFailed",
        "If-Match is malformed, or the controls changed since you read them (the current ETag is sent then).",
        ("ETag",),
    ),
    "413": ("ContentTooLarge", "The change is too large.", ()),
    "415": ("UnsupportedMediaType", "The change or report is not sent as JSON.", ()),
    "422": (
        "UnprocessableContent",
        "Nothing was changed or reported: `errors` names each bad field and what it may be.",
        (),
    ),
    "429": ("TooManyRequests", "Too many changes in a short time.", ("Retry-After",)),
    "503": ("ServiceUnavailable", "Your settings cannot be reached just now; nothing was saved.", ("Retry-After",)),
}
_RESPONSE_NAMES = {status: name for status, (name, _, _) in _ERRORS.items()}


def _responses() -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for name, description, headers in _ERRORS.values():
        response: dict[str, Any] = {
            "description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if headers:
            response["headers"] = {header: {"$ref": f"#/components/headers/{header}"} for header in headers}
        responses[name] = response
    return responses


def _headers() -> dict[str, Any]:
    return {
        "ETag": {
            "description": "The revision of the controls, quoted: send it back as If-Match.",
            "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
        },
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 0},
        },
    }
