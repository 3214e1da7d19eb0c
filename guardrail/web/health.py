"""`GET {prefix}/healthz` (alive) and `GET {prefix}/readyz` (the store and every readiness check answer)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.guard import Guard
from guardrail.runtime import Runtime
from guardrail.web.common import json_response, route


def health_routes(runtime: Runtime, guard: Guard, prefix: str) -> list[Route]:
    policy_id = guard.policy.policy_id

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, report = await runtime.readiness_report(policy_id)
        return json_response(report, 200 if ready else 503)

    return [route(f"{prefix}/healthz", healthz, "GET"), route(f"{prefix}/readyz", readyz, "GET")]
