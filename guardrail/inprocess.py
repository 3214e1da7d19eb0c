"""Checking items the service holds as Python objects (docs/integrate.md, "In-process checking").

A service that builds its recommendations in Python need not serialize them for the middleware to parse
and write again: `await gr.check(request, items, route=...)` decides the same items the same way, on the
same resolved caller, and says what the middleware would have said (the kept items with their
explanations, the `guardrail` summary, the `Guardrail-*` headers), counting and recording the decision
as the middleware does. The guardrail parses and writes no JSON on this path; `GuardedJSONResponse`
writes the page once, with orjson, in the shape the middleware writes.

Behind the middleware (mounted in front of the app), the caller is the one it resolved for this request
and the page it returns as a `GuardedJSONResponse` passes through it unchecked a second time and counted
once. Without the middleware in front, `check` resolves the caller from the request the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from guardrail.bodies import storable_ids, write_json
from guardrail.context_header import GuardrailContext, guardrail_context
from guardrail.engine import ItemDecision
from guardrail.middleware import RESOLVED, Resolved
from guardrail.responder import CHECKED_IN_PROCESS
from guardrail.routes import GuardedRoute
from guardrail.summary import decision_record, header_map, outcome, summary
from guardrail.why_links import link_dicts, why_base

if TYPE_CHECKING:
    from guardrail.guard import Guard
    from guardrail.middleware import GuardrailMiddleware


class Checked(NamedTuple):
    """A checked page. `items`: in enforce mode the kept ones, in order, each with its `explanation`
    (a dict, the same object for every item decided alike); in shadow mode all of them, as given.
    `summary`: the `guardrail` object of an annotated response (in shadow mode what it would say;
    the middleware writes none then). `headers`: the headers the middleware sends with such a page.
    `decisions`: one per item given, in order. `overhead`: seconds the check took."""

    items: list[dict[str, Any]]
    summary: dict[str, Any]
    headers: dict[str, str]
    decisions: list[ItemDecision]
    overhead: float


class InProcess:
    """In-process checks on the policy a `GuardrailMiddleware` serves, with its store, metrics and ids.

    A reloaded policy applies from the next request on, as in the middleware."""

    def __init__(self, middleware: GuardrailMiddleware) -> None:
        self.middleware = middleware

    async def _resolved(self, scope: Scope) -> tuple[Resolved, bool]:
        """The resolved caller, and whether the middleware in front resolved it (and reports the request)."""
        resolved = scope.get(RESOLVED)
        if type(resolved) is Resolved:
            return resolved, True
        return await self.middleware.resolve(scope), False

    async def context(self, request: HTTPConnection | Mapping[str, Any]) -> GuardrailContext:
        """What this request may be personalized with: what the middleware sends as `Guardrail-Context`."""
        scope = request.scope if isinstance(request, HTTPConnection) else request
        resolved, _ = await self._resolved(scope)  # type: ignore[arg-type]
        return guardrail_context(resolved.ctx)

    async def check(
        self, request: HTTPConnection | Mapping[str, Any], items: Sequence[dict[str, Any]], *, route: str
    ) -> Checked:
        """Decide `items` (dicts with the fields of `route`'s item contract) for the caller of `request`
        (a Starlette request or an ASGI scope), on the guarded route whose `path` in the policy is `route`.

        Raises `LookupError` for a route the policy does not guard and `guardrail.engine.BadItem` (a
        `ValueError`) for an item that does not follow the item contract.

        In enforce mode each kept item gets its `explanation` (a dict) set on it, as the middleware sets
        it on the page it reads: give `check` the items made for this request (objects shared with other
        requests would carry this caller's explanations). Shadow mode changes nothing."""
        started = time.perf_counter()
        scope = request.scope if isinstance(request, HTTPConnection) else request
        resolved, in_front = await self._resolved(scope)  # type: ignore[arg-type]
        guard = resolved.guard
        target = _route(guard, route)
        ctx = resolved.ctx
        policy = guard.policy
        mode = policy.mode
        runtime = self.middleware.runtime
        decision = runtime.next_decision_id()
        given = items if type(items) is list else list(items)
        # Items that name no signals use the route's default ones even when the middleware would have
        # asked the non-personalized route: in process, nothing shows they were made without the user.
        enforce = mode == "enforce"
        # On the items themselves, as the middleware annotates the page it reads: a copy of each would
        # cost more than deciding it. Each kept item's explanation is for this caller.
        found = guard.check(ctx, target.fields, given, target.default_signals, annotate=enforce, as_dicts=True)
        if found.wide_ids:  # an integer beyond 64 bits is recorded as its digits
            found = found._replace(item_ids=storable_ids(found.item_ids))
        user = resolved.caller.user
        if enforce and user is not None and guard.prefix:
            link_dicts(found.kept, target.fields.id, why_base(guard.prefix, decision))
        decisions, hidden = found.decisions, found.hidden
        kept = found.kept if enforce else given
        degraded = ctx.degraded
        notice = guard.notice.by_kind(ctx.locale, found.hidden_by_kind, ctx.paused_until) if hidden else None
        page = summary(decision, mode, policy.policy_id, len(found.kept), len(hidden), degraded, notice)
        headers = header_map(decision, mode, len(hidden), degraded)
        if degraded:
            runtime.count_fail_mode(policy.fail_mode)
        runtime.after_decision(
            target.template,
            found,
            decision_record(decision, user, target.template, mode, policy.policy_id, ctx, found, given, target.fields),
        )
        runtime.note_for_review(guard.for_review(target.template, target.fields, given, found))
        overhead = time.perf_counter() - started
        if not in_front:
            runtime.request_done(
                target.template,
                outcome(mode, degraded),
                hidden=len(hidden),
                decision=decision,
                user=user,
                started=started,
                overhead=overhead,
            )
        return Checked(kept, page, headers, decisions, overhead)


def _route(guard: Guard, path: str) -> GuardedRoute:
    guarded = guard.routes.guarded
    found = guarded.get(path)
    if found is None:
        known = ", ".join(sorted(guarded)) or "none"
        raise LookupError(f"the policy guards no route {path!r}; its guarded routes: {known}")
    return found


class GuardedJSONResponse(Response):
    """A checked page as JSON, in the shape the middleware writes: `{key: items, **extra, "guardrail":
    summary}` in enforce mode (the summary last, as the middleware appends it), `{key: items, **extra}`
    in shadow mode; with the page's `Guardrail-*` headers (and `Cache-Control: private, no-store` in
    enforce mode). Written once, with orjson (the standard library's writer for integers beyond 64 bits).

    Behind the middleware, the page passes through it as it is (see `guardrail.responder`)."""

    media_type = "application/json"

    def __init__(
        self,
        checked: Checked,
        *,
        key: str = "items",
        extra: Mapping[str, Any] | None = None,
        status_code: int = 200,
    ) -> None:
        document: dict[str, Any] = {key: checked.items}
        if extra:
            if key in extra or "guardrail" in extra:
                raise ValueError(f"`extra` may not hold {key!r} or 'guardrail': the checked page says those")
            document.update(extra)
        if checked.summary["mode"] == "enforce":
            document["guardrail"] = checked.summary
        self.checked = checked
        super().__init__(document, status_code=status_code, headers=checked.headers)

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            return write_json(content, exact=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
                CHECKED_IN_PROCESS: self.checked,
            }
        )
        await send({"type": "http.response.body", "body": self.body})
        if self.background is not None:
            await self.background()
