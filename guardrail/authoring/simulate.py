"""`guardrail simulate`: what the middleware sends one user for one upstream body (docs/integrate.md, "Simulate
a response").

Not a second implementation: the real `GuardrailMiddleware` runs in process, in front of an upstream that answers
the body on every path, on a copy of the policy whose identity is the simulated user, with a memory store holding
the user's controls. One request goes to the route, carrying what the scenario's request says: `Sec-GPC`,
`Accept-Language`, and the TC string where the policy reads it (its header, cookie or query parameter).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardrail.authoring.scenario import Scenario, settable
from guardrail.controls import validate_patch
from guardrail.middleware import GuardrailMiddleware
from guardrail.policy.models import Identity, Policy
from guardrail.routes import GuardedRoute

# Who the simulated user is to the middleware: never shown, and never anyone's real id.
SIMULATED_USER = "simulated-user"
# Characters a path keeps as they are in its percent-encoded form (RFC 3986 §3.3).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class SimulationError(ValueError):
    """A scenario the middleware cannot be asked about (the policy reads no TC string, an anonymous age)."""


class Simulated(NamedTuple):
    """What the middleware sent: the status, the headers, the body, and, when it could not check the upstream's
    body, why and what it did instead (the middleware's own words, as it logs them), else None."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    unchecked: str | None


def simulated_policy(policy: Policy) -> Policy:
    """The policy with the simulated user as its identity: the policy's own source (a trusted proxy's header,
    a JWT and its key) need not be at hand, and everything else stays as it is served."""
    return policy.model_copy(update={"identity": Identity(source="callable")})


def upstream_answering(body: bytes) -> ASGIApp:
    """An upstream that answers `body` as `application/json` on every path: a route with a `non_personalized`
    rewrite asks another path of it, and gets the same body."""

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return upstream


async def simulate(policy: Policy, scenario: Scenario, body: bytes) -> Simulated:
    """Run `body` through the middleware for the scenario's user and request. Raises `LookupError` for a route
    the policy does not guard, `InvalidControls` for controls the policy refuses, `SimulationError` otherwise."""
    if scenario.anonymous and scenario.request.age is not None:
        raise SimulationError("an anonymous caller has no age: the identity source says it for a signed-in user")
    if scenario.store != "ok" or scenario.request.now is not None:
        raise SimulationError("the middleware runs now, with its store answering")
    age = scenario.request.age

    def identify(scope: MutableMapping[str, Any]) -> tuple[str, int | None] | None:
        return None if scenario.anonymous else (SIMULATED_USER, age)

    middleware = GuardrailMiddleware(
        upstream_answering(body),
        policy=simulated_policy(policy),
        store="memory://",
        registry=CollectorRegistry(),  # counts nothing into the process's own metrics
        identify=identify,
    )
    route = middleware.guard.route_named(scenario.route)
    if scenario.controls and not scenario.anonymous:
        now = datetime.now(UTC)
        patch = validate_patch(middleware.policy, settable(scenario.controls), now)
        await middleware.store.patch(SIMULATED_USER, patch, if_match=None, now=now)
    scope = request_scope(middleware.policy, route, scenario)
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    with _unchecked_logged() as unchecked:
        await middleware.runtime.start()
        try:
            await middleware(scope, receive, send)
        finally:
            await middleware.runtime.close()
    start = next(message for message in messages if message["type"] == "http.response.start")
    sent = b"".join(message.get("body", b"") for message in messages if message["type"] == "http.response.body")
    return Simulated(start["status"], list(start.get("headers", ())), sent, unchecked[0] if unchecked else None)


def request_scope(policy: Policy, route: GuardedRoute, scenario: Scenario) -> Scope:
    """One request to `route`, as a browser would send it for the scenario: a GET where the route takes one."""
    path = request_path(route, scenario.route)
    request = scenario.request
    headers: list[tuple[bytes, bytes]] = [(b"host", b"guardrail.simulate")]
    if request.gpc:
        headers.append((b"sec-gpc", b"1"))
    if request.accept_language is not None:
        headers.append((b"accept-language", request.accept_language.encode("latin-1", "replace")))
    query = b""
    if request.tc_string is not None:
        tcf = policy.tcf
        if tcf.header:
            headers.append((tcf.header.encode("latin-1"), request.tc_string.encode("latin-1", "replace")))
        elif tcf.cookie:
            headers.append((b"cookie", f"{tcf.cookie}={request.tc_string}".encode("latin-1", "replace")))
        elif tcf.query:
            query = urlencode({tcf.query: request.tc_string}).encode("ascii")
        else:
            raise SimulationError("the policy reads no TC string: its tcf has no header, cookie or query")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET" if "GET" in route.methods else min(route.methods),
        "scheme": "https",
        "path": path,
        "raw_path": quote(path, safe=_PATH_SAFE).encode("ascii"),
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("guardrail.simulate", 443),
    }


def request_path(route: GuardedRoute, given: str | None) -> str:
    """The path asked for: the one given, else the route's; a prefix route (`/feed/*`) is asked at its prefix."""
    path = given if given is not None else route.template
    return path.removesuffix("*")


@contextmanager
def _unchecked_logged() -> Iterator[list[str]]:
    """What the middleware logs while it runs, kept here rather than printed: its start line is not the
    simulation's output, and its line for a body it could not check is the reason the CLI reports."""
    logger = logging.getLogger("guardrail")
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # `Runtime.log_unchecked`: (route, kind, detail, what was done with the body).
            if record.msg.startswith("upstream body on ") and isinstance(record.args, tuple):
                _, kind, detail, outcome = record.args
                said.append(f"{detail} ({kind}), so it is {outcome}")

    handler = Keep()
    propagate, level = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)
