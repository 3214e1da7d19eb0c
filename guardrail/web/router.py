"""The management surface as one ASGI app (docs/architecture.md §7): health, controls, decisions, the
data export, reports, the OpenAPI document, the controls page and each item's "why?" page under the
policy's prefix, and the GPC statement. A path
none of them serves is a problem+json 404.

The middleware builds one for each guard it serves and swaps the two together, so a reloaded policy
brings its own routes, rules and identity to the API and the page at once.
"""

from __future__ import annotations

from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail.guard import Guard
from guardrail.runtime import Runtime
from guardrail.web.common import route
from guardrail.web.controls_api import controls_routes
from guardrail.web.decisions import decision_routes
from guardrail.web.export import export_routes
from guardrail.web.gpc import gpc_route
from guardrail.web.health import health_routes
from guardrail.web.openapi import openapi_endpoint
from guardrail.web.page import page_routes
from guardrail.web.problem import problem
from guardrail.web.ratelimit import ChangeLimiter
from guardrail.web.reports import Reports, report_routes
from guardrail.web.review_api import review_routes
from guardrail.web.review_page import review_page_routes
from guardrail.web.why_page import why_routes


def build_management_app(runtime: Runtime, guard: Guard) -> ASGIApp:
    """Every path the guardrail answers itself, for `guard`'s policy."""
    prefix = guard.prefix or ""
    # One limiter for the API and the page: a change counts the same whichever way it came.
    limiter = ChangeLimiter(guard.policy.controls_rate_limit, runtime.store)
    reports = Reports(runtime, guard, limiter)
    return Router(
        routes=[
            *health_routes(runtime, guard, prefix),
            *controls_routes(runtime, guard, limiter, prefix),
            *decision_routes(runtime, guard, prefix),
            *export_routes(runtime, guard, prefix),
            route(f"{prefix}/v1/openapi.json", openapi_endpoint(guard.policy), "GET"),
            *report_routes(reports, prefix),
            *page_routes(runtime, guard, limiter, prefix),
            *why_routes(runtime, guard, limiter, reports, prefix),
            *(review_routes(runtime, guard, prefix) if guard.review is not None else ()),
            *(review_page_routes(runtime, guard, limiter, prefix) if guard.review is not None else ()),
            gpc_route(),
        ],
        default=_not_found,
    )


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await problem(404, "Not Found", f"There is nothing at {scope['path']}.")(scope, receive, send)
