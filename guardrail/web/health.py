"""`GET {prefix}/healthz` (alive) and `GET {prefix}/readyz` (the store and every readiness check answer,
and the issuer's JWT keys when the policy takes them from a key set: without them nobody is recognized)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.guard import Guard
from guardrail.runtime import Runtime
from guardrail.web.common import json_response, route


async def readiness_report(runtime: Runtime, guard: Guard) -> tuple[bool, dict[str, str]]:
    """(ready, the body `/readyz` answers): its status, the live policy, the store and each readiness
    check, then the JWT key set when the policy takes its keys from one ("ok" or "error: ...")."""
    ready, checks = await runtime.readiness()
    keys = guard.identity.keys
    if keys is not None:
        problem = await keys.readiness()
        checks["jwt_keys"] = "ok" if problem is None else f"error: {problem}"
        ready = ready and problem is None
    return ready, {"status": "ready" if ready else "unavailable", "policy": guard.policy.policy_id, **checks}


def health_routes(runtime: Runtime, guard: Guard, prefix: str) -> list[Route]:

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, report = await readiness_report(runtime, guard)
        return json_response(report, 200 if ready else 503)

    return [route(f"{prefix}/healthz", healthz, "GET"), route(f"{prefix}/readyz", readyz, "GET")]
