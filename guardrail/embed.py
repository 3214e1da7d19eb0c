"""`guardrail.install(app, ...)`: the guardrail mounted on a Starlette or FastAPI app in one call, and the
`Guardrail` handle it returns (docs/architecture.md §12, docs/integrate.md "Mount it in one call").

    gr = guardrail.install(app, policy="config/guardrail.yaml", store="redis://localhost:6379/0")

The policy is loaded and checked at the call, and the middleware built there: a bad policy or store
raises then, not at the first request. The store is connected at the app's startup and, after the
app's own shutdown handlers, its queued decision records are written and it is closed
(`GuardrailMiddleware`'s lifespan). The module is not named `install`: importing a submodule sets the
package's attribute of that name, which would hide the function `guardrail.install`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail.context_header import GuardrailContext, guardrail_context
from guardrail.errors import PolicyError
from guardrail.identity import Identify
from guardrail.inprocess import Checked, InProcess
from guardrail.middleware import GuardrailMiddleware
from guardrail.policy.loading import load_policy
from guardrail.policy.models import Policy
from guardrail.reload import adopt, refuse
from guardrail.store import Store

if TYPE_CHECKING:
    from guardrail.tracing import TracerProvider

# `fn(scope) -> (user, age) | None`: who asks, instead of the policy's identity source.


class Guardrail:
    """The guardrail mounted on an app: its policy, readiness, and what it decides for a request.

    `middleware` is the `GuardrailMiddleware` in the app's stack (its `runtime`, `store`, `metrics`)."""

    def __init__(self, middleware: GuardrailMiddleware) -> None:
        self.middleware = middleware
        self._in_process = InProcess(middleware)

    @property
    def policy(self) -> Policy:
        """The live policy."""
        return self.middleware.policy

    def reload(self, policy: Policy | str | os.PathLike[str]) -> Policy:
        """Serve `policy` (a `Policy`, or a file's path, loaded and checked here) from now on.

        Requests already running finish on the policy they started with. A bad policy raises
        `PolicyError` naming every problem, and the live one keeps serving. Counted in
        `guardrail_policy_reloads_total` and logged, like a reload on SIGHUP (`guardrail.reload`)."""
        try:
            loaded = policy if isinstance(policy, Policy) else load_policy(policy)
        except PolicyError as exc:
            refuse(self.middleware, exc)
            raise
        adopt(self.middleware, loaded)
        return loaded

    async def ready(self) -> dict[str, str]:
        """What `GET {prefix}/readyz` answers, as a dict: `status` is `"ready"` or `"unavailable"`,
        `policy` the live policy's id, then `store` and each readiness check, `"ok"` or `"error: ..."`.
        The store is asked now, so a store that was down at startup shows here when it comes back."""
        from guardrail.web.health import readiness_report

        _, report = await readiness_report(self.middleware.runtime, self.middleware.guard)
        return report

    async def context(self, request: HTTPConnection | Scope) -> GuardrailContext:
        """What the guardrail decides for `request` (a Starlette `Request`, or an ASGI http scope)
        before a guarded route runs: the facts its `Guardrail-Context` header carries, resolved as
        the middleware resolves them (identity, GPC, age, TCF, the user's controls, the store's state).

        A recommender in the same process asks for this instead of reading the header, to fetch only
        what will be kept (docs/integrate.md "Guardrail-Context")."""
        scope = request.scope if isinstance(request, HTTPConnection) else request
        resolved = await self.middleware.resolve(scope)
        return guardrail_context(resolved.ctx)

    async def check(self, request: HTTPConnection | Scope, items: Sequence[dict[str, Any]], *, route: str) -> Checked:
        """`items` checked in process, as the middleware would check them on the guarded `route`
        (the policy's spelling): see `guardrail.inprocess.InProcess.check`. No JSON parsed or written."""
        return await self._in_process.check(request, items, route=route)


def install(
    app: Any,
    *,
    policy: Policy | str | os.PathLike[str],
    store: Store | str | None = None,
    registry: CollectorRegistry | None = None,
    identify: Identify | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Guardrail:
    """Mount the guardrail on a Starlette or FastAPI `app` and return its handle.

    `policy`: a `Policy` or a policy file's path, loaded and checked now (`PolicyError` lists every
    problem); `store`: a store URL or object (default `GUARDRAIL_STORE`, else `memory://`);
    `registry`: the Prometheus registry for the metrics (the global one by default); `identify`:
    `fn(scope) -> (user, age) | None`, who asks, instead of the policy's identity source;
    `tracer_provider`: where its spans go, rather than the provider the application set (docs/operations.md "Traces").

    Call it before the app serves its first request (Starlette builds its middleware stack then),
    before or after adding routes. The guardrail sits outside the middleware added before this call
    and inside those added after it (Starlette's order: the last added runs first)."""
    add_middleware = getattr(app, "add_middleware", None)
    if add_middleware is None:
        raise TypeError(
            f"guardrail.install mounts on a Starlette or FastAPI app, not {type(app).__name__}; "
            "wrap another ASGI app by hand: GuardrailMiddleware(app, policy=..., store=...)"
        )
    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    options: dict[str, Any] = {}
    if identify is not None:
        options["identify"] = identify
    if tracer_provider is not None:
        options["tracer_provider"] = tracer_provider
    middleware = GuardrailMiddleware(_not_mounted, policy=loaded, store=store, registry=registry, **options)

    def guardrail(app: ASGIApp) -> ASGIApp:
        # Starlette calls this when it builds its middleware stack, with the app the guardrail wraps:
        # the middleware was built (and checked) at the call, so nothing can fail here.
        middleware.app = app
        return middleware

    add_middleware(guardrail)
    return Guardrail(middleware)


async def _not_mounted(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("guardrail.install: the app has not built its middleware stack yet")
