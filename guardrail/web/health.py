"""`GET {prefix}/healthz` (alive) and `GET {prefix}/readyz` (the store and every readiness check answer,
and the issuer's JWT keys when the policy takes them from a key set: without them nobody is recognized)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.guard import Guard
from guardrail.runtime import Runtime
from guardrail.web.common import json_response, route


def health_routes(runtime: Runtime, guard: Guard, prefix: str) -> list[Route]:
    policy_id = guard.policy.policy_id
    keys = guard.identity.keys

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, checks = await runtime.readiness()
        if keys is not None:
            problem = await keys.readiness()
            checks["jwt_keys"] = "ok" if problem is None else f"error: {problem}"
            ready = ready and problem is None
        report = {"status": "ready" if ready else "unavailable", "policy": policy_id, **checks}
        return json_response(report, 200 if ready else 503)

    return [route(f"{prefix}/healthz", healthz, "GET"), route(f"{prefix}/readyz", readyz, "GET")]
