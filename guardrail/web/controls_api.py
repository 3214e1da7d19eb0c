"""`GET`, `PATCH` and `DELETE {prefix}/v1/controls`: the caller's controls as JSON (docs/api.md#controls)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.controls import validate_patch
from guardrail.errors import InvalidControls, StaleRevision, StoreError
from guardrail.guard import Guard
from guardrail.runtime import Runtime
from guardrail.state import DEFAULT_STATE
from guardrail.web.common import (
    ERASE,
    caller,
    count_changes,
    json_response,
    read_json_body,
    route,
    store_down,
    too_many_changes,
    unauthorized,
)
from guardrail.web.problem import problem
from guardrail.web.ratelimit import ChangeLimiter

MAX_PATCH_BYTES = 64 * 1024
PATCH_TYPES = ("application/merge-patch+json", "application/json")


def controls_routes(runtime: Runtime, guard: Guard, limiter: ChangeLimiter, prefix: str) -> list[Route]:
    api = ControlsApi(runtime, guard, limiter)
    return [route(f"{prefix}/v1/controls", api.controls, "GET", "PATCH", "DELETE")]


class ControlsApi:
    def __init__(self, runtime: Runtime, guard: Guard, limiter: ChangeLimiter) -> None:
        self.runtime = runtime
        self.guard = guard
        self.policy = guard.policy
        self.limiter = limiter

    async def controls(self, request: Request) -> Response:
        user = await caller(self.guard, request)
        if user is None:
            return unauthorized()
        if request.method in ("PATCH", "DELETE"):
            wait = await self.limiter.retry_after(user)
            if wait is not None:
                return too_many_changes(wait)
        store = self.runtime.store
        try:
            if request.method == "PATCH":
                return await self._patch(request, user)
            if request.method == "DELETE":
                await store.erase(user)
                count_changes(self.runtime, ERASE)
                return Response(status_code=204)
            state = await store.load(user)
        except StoreError:
            return store_down()
        now = datetime.now(UTC)
        current = state if state is not None else DEFAULT_STATE
        return json_response(current.to_json(user, now), headers={"ETag": f'"{current.revision}"'})

    async def _patch(self, request: Request, user: str) -> Response:
        body = await read_json_body(request, "a change", MAX_PATCH_BYTES, PATCH_TYPES)
        if isinstance(body, Response):
            return body
        if_match = parse_if_match(request.headers.get("if-match"))
        if if_match == "invalid":
            return problem(412, "Precondition Failed", 'If-Match must be an ETag from GET, such as "7".')
        now = datetime.now(UTC)
        try:
            patch = validate_patch(self.policy, body, now)
            state = await self.runtime.store.patch(
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
        count_changes(self.runtime, patch.changed_fields())
        return json_response(state.to_json(user, now), headers={"ETag": f'"{state.revision}"'})


def parse_if_match(value: str | None) -> int | str | None:
    """The revision an If-Match names; None for none or `*`; "invalid" for anything else."""
    if value is None or value.strip() == "*":
        return None
    tag = value.strip().removeprefix("W/")
    if len(tag) >= 2 and tag[0] == tag[-1] == '"' and tag[1:-1].isdigit():
        return int(tag[1:-1])
    return "invalid"
