"""What the management surface's modules share: who is asking and in which language, reading a bounded
body, the answer when the store is down, counting changes, routes whose wrong-method answer is
problem+json, JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.guard import Guard
from guardrail.messages import CATALOGS, SOURCE_LOCALE
from guardrail.runtime import Runtime
from guardrail.web.problem import problem

Endpoint = Callable[[Request], Awaitable[Response]]
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# When the store cannot be reached, a change is not saved: 503, and a retry soon may find it back.
STORE_DOWN_STATUS = 503
STORE_DOWN_HEADERS: Mapping[str, str] = {"Retry-After": "1"}
JSON = "application/json"
# What `count_changes` counts an erasure as.
ERASE = ("erase",)


async def caller(guard: Guard, request: Request) -> str | None:
    """The user asking, from the policy's identity source; None when the request does not say."""
    return (await guard.identity.caller(request.scope)).user


def choose_locale(guard: Guard, request: Request, user_locale: str | None = None) -> str:
    """The language of the texts for this caller: their locale control, else Accept-Language, else the
    policy's default (a language the message catalog has, else the catalog's source language)."""
    accept = request.headers.get("accept-language")
    locale = guard.locales.choose(user_locale, accept.encode("latin-1") if accept else None)
    if locale in CATALOGS:
        return locale
    default = guard.policy.default_locale
    return default if default in CATALOGS else SOURCE_LOCALE


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is over `limit` bytes (the rest is not read)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            return None
    return raw


async def read_json_body(request: Request, what: str, limit: int, media_types: Sequence[str] = (JSON,)) -> Any:
    """The request's JSON body, or the problem+json response that says why it cannot be read (`415`, `413`,
    `400`). `what`: how the detail names the body ("the report")."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in media_types:
        return problem(415, "Unsupported Media Type", f"Send {what} as JSON: Content-Type: {media_types[0]}.")
    raw = await read_body(request, limit)
    if raw is None:
        return problem(413, "Content Too Large", f"{what[0].upper()}{what[1:]} may be at most {limit} bytes.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return problem(400, "Bad Request", f"The body is not valid JSON: {exc}.")


def too_many_changes(wait: int) -> Response:
    """The API's answer to a change over the caller's rate limit (the page renders its own, with the same status)."""
    return problem(
        429,
        "Too Many Requests",
        f"You made many changes in a short while. Try again in {wait} seconds.",
        headers={"Retry-After": str(wait)},
    )


def unauthorized() -> Response:
    """The API's answer to a request that does not say who is asking."""
    return problem(401, "Unauthorized", "Sign in first: this request did not say who you are.")


def store_down() -> Response:
    """The API's answer when the store is down (the page renders its own, with the same status)."""
    return problem(
        STORE_DOWN_STATUS,
        "Service Unavailable",
        "Your settings cannot be reached just now, so nothing was saved. Try again in a moment.",
        headers=STORE_DOWN_HEADERS,
    )


def count_changes(runtime: Runtime, fields: Sequence[str]) -> None:
    """Count a user's change to their controls by field; `ERASE` for an erasure."""
    changes = runtime.metrics.control_changes
    for field in fields:
        changes.labels(field).inc()


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


def route(path: str, endpoint: Endpoint, *methods: str) -> Route:
    """A route whose wrong-method answer is problem+json too (Starlette's own is plain text)."""
    allowed = ", ".join(methods)

    async def checked(request: Request) -> Response:
        if request.method not in methods:
            return problem(
                405, "Method Not Allowed", f"{request.method} is not allowed here; use {allowed}.",
                headers={"Allow": allowed},
            )  # fmt: skip
        return await endpoint(request)

    return Route(path, checked, methods=EVERY_METHOD)
