"""The JSON API under the policy's prefix (docs/architecture.md §7): controls, decisions, health."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp

from guardrail.controls import validate_patch
from guardrail.errors import InvalidControls, StaleRevision, StoreError
from guardrail.explain.render import receipt_text
from guardrail.state import DEFAULT_STATE, format_time
from guardrail.store import DecisionRecord
from guardrail.web.openapi import openapi_endpoint
from guardrail.web.page import page_routes
from guardrail.web.problem import problem
from guardrail.web.ratelimit import ChangeLimiter

if TYPE_CHECKING:
    from guardrail.guard import Guard
    from guardrail.middleware import GuardrailMiddleware

Endpoint = Callable[[Request], Awaitable[Response]]
MAX_PATCH_BYTES = 64 * 1024
_EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PATCH_TYPES = ("application/merge-patch+json", "application/json")


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


def build_api(middleware: GuardrailMiddleware, guard: Guard) -> ASGIApp:
    api = ControlsApi(middleware, guard)
    prefix = guard.prefix or ""
    return Router(
        routes=[
            _route(f"{prefix}/healthz", api.healthz, "GET"),
            _route(f"{prefix}/readyz", api.readyz, "GET"),
            _route(f"{prefix}/v1/controls", api.controls, "GET", "PATCH", "DELETE"),
            _route(f"{prefix}/v1/decisions", api.decisions, "GET"),
            _route(f"{prefix}/v1/decisions/{{decision_id}}", api.decision, "GET"),
            _route(f"{prefix}/v1/openapi.json", openapi_endpoint(guard.policy), "GET"),
            *page_routes(api, prefix, _route),
        ],
        default=api.not_found,
    )


def _route(path: str, endpoint: Endpoint, *methods: str) -> Route:
    """A route whose wrong-method answer is problem+json too (Starlette's own is plain text)."""
    allowed = ", ".join(methods)

    async def checked(request: Request) -> Response:
        if request.method not in methods:
            return problem(
                405, "Method Not Allowed", f"{request.method} is not allowed here; use {allowed}.",
                headers={"Allow": allowed},
            )  # fmt: skip
        return await endpoint(request)

    return Route(path, checked, methods=_EVERY_METHOD)


class ControlsApi:
    def __init__(self, middleware: GuardrailMiddleware, guard: Guard) -> None:
        self.middleware = middleware
        self.guard = guard
        self.policy = guard.policy
        self.limiter = ChangeLimiter(guard.policy.controls_rate_limit, middleware.store)

    async def not_found(self, scope: Any, receive: Any, send: Any) -> None:
        response = problem(404, "Not Found", f"There is nothing at {scope['path']}.")
        await response(scope, receive, send)

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        report = {"status": "ready", "policy": self.policy.policy_id, "store": "ok"}
        try:
            await self.middleware.store.check()
        except StoreError as exc:
            report["store"] = f"error: {exc}"
            report["status"] = "unavailable"
        for name, check in self.middleware.readiness_checks.items():
            problem = await check()
            if problem is not None:
                report[name] = f"error: {problem}"
                report["status"] = "unavailable"
            else:
                report[name] = "ok"
        return json_response(report, 200 if report["status"] == "ready" else 503)

    def _user(self, request: Request) -> str | None:
        return self.guard.identity.caller(request.scope).user

    async def controls(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return _unauthorized()
        if request.method in ("PATCH", "DELETE"):
            wait = await self.limiter.retry_after(user)
            if wait is not None:
                return problem(
                    429,
                    "Too Many Requests",
                    f"You changed your settings many times in a short while. Try again in {wait} seconds.",
                    headers={"Retry-After": str(wait)},
                )
        try:
            if request.method == "PATCH":
                return await self._patch(request, user)
            if request.method == "DELETE":
                await self.middleware.store.erase(user)
                self.middleware.metrics.control_changes.labels("erase").inc()
                return Response(status_code=204)
            state = await self.middleware.store.load(user)
        except StoreError:
            return _store_down()
        now = datetime.now(UTC)
        current = state if state is not None else DEFAULT_STATE
        return json_response(current.to_json(user, now), headers={"ETag": f'"{current.revision}"'})

    async def _patch(self, request: Request, user: str) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in PATCH_TYPES:
            return problem(
                415,
                "Unsupported Media Type",
                "Send the change as a JSON merge patch: Content-Type: application/merge-patch+json.",
            )
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_PATCH_BYTES:
                return problem(413, "Content Too Large", f"A change may be at most {MAX_PATCH_BYTES} bytes.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return problem(400, "Bad Request", f"The body is not valid JSON: {exc}.")
        if_match = _parse_if_match(request.headers.get("if-match"))
        if if_match == "invalid":
            return problem(412, "Precondition Failed", 'If-Match must be an ETag from GET, such as "7".')
        now = datetime.now(UTC)
        try:
            patch = validate_patch(self.policy, body, now)
            state = await self.middleware.store.patch(
                user, patch, if_match=if_match if isinstance(if_match, int) else None, now=now
            )
        except InvalidControls as exc:
            return problem(
                422,
                "Unprocessable Content",
                f"Nothing was changed. {exc}",
                errors=[{"field": field, "message": message} for field, message in exc.problems],
            )
        except StaleRevision as exc:
            return problem(
                412,
                "Precondition Failed",
                f"Nothing was changed: {exc}. Read the controls again and reapply your change.",
                headers={"ETag": f'"{exc.current}"'},
            )
        for field in patch.changed_fields():
            self.middleware.metrics.control_changes.labels(field).inc()
        return json_response(state.to_json(user, now), headers={"ETag": f'"{state.revision}"'})

    async def decisions(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return _unauthorized()
        try:
            records = await self.middleware.store.decisions(user)
        except StoreError:
            return _store_down()
        return json_response({"decisions": [self._summary(r) for r in records]})

    async def decision(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return _unauthorized()
        decision_id = request.path_params["decision_id"]
        try:
            record = await self.middleware.store.decision(user, decision_id)
        except StoreError:
            return _store_down()
        if record is None:
            # 404, not 403: whether someone else's decision exists is nobody else's business.
            return problem(404, "Not Found", f"You have no decision {decision_id!r}.")
        locale = record.locale if record.locale in self.policy.locales else self.policy.default_locale
        return json_response(
            {
                **self._summary(record),
                "items": [
                    {
                        "id": item_id,
                        "action": action,
                        "reasons": list(reasons),
                        "because": list(because),
                        "text": receipt_text(self.guard.compiled, locale, reasons, because),
                    }
                    for item_id, action, reasons, because in record.items
                ],
            }
        )

    @staticmethod
    def _summary(record: DecisionRecord) -> dict[str, Any]:
        hidden = sum(1 for item in record.items if item[1] == "hide")
        return {
            "decision": record.id,
            "created_at": format_time(datetime.fromtimestamp(record.created_at, UTC)),
            "route": record.route,
            "mode": record.mode,
            "policy": record.policy,
            "degraded": record.degraded,
            "kept": len(record.items) - hidden,
            "hidden": hidden,
        }


def _parse_if_match(value: str | None) -> int | str | None:
    if value is None or value.strip() == "*":
        return None
    tag = value.strip().removeprefix("W/")
    if len(tag) >= 2 and tag[0] == tag[-1] == '"' and tag[1:-1].isdigit():
        return int(tag[1:-1])
    return "invalid"


def _unauthorized() -> Response:
    return problem(401, "Unauthorized", "Sign in first: this request did not say who you are.")


def _store_down() -> Response:
    return problem(
        503,
        "Service Unavailable",
        "Your settings cannot be reached just now, so nothing was saved. Try again in a moment.",
        headers={"Retry-After": "1"},
    )
