"""`GET {prefix}/v1/decisions` and `GET {prefix}/v1/decisions/{id}`: the caller's decision receipts
(docs/api.md), each item's reasons in plain language."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.engine import CompiledPolicy
from guardrail.errors import StoreError
from guardrail.explain.render import receipt_text
from guardrail.guard import Guard
from guardrail.runtime import Runtime
from guardrail.state import format_time
from guardrail.store import DecisionRecord
from guardrail.web.common import caller, json_response, route, store_down, unauthorized
from guardrail.web.problem import problem


def decision_routes(runtime: Runtime, guard: Guard, prefix: str) -> list[Route]:
    receipts = Receipts(runtime, guard)
    return [
        route(f"{prefix}/v1/decisions", receipts.decisions, "GET"),
        route(f"{prefix}/v1/decisions/{{decision_id}}", receipts.decision, "GET"),
    ]


class Receipts:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self.runtime = runtime
        self.guard = guard
        self.policy = guard.policy

    async def decisions(self, request: Request) -> Response:
        user = await caller(self.guard, request)
        if user is None:
            return unauthorized()
        try:
            records = await self.runtime.store.decisions(user)
        except StoreError:
            return store_down()
        return json_response({"decisions": [summary(r) for r in records]})

    async def decision(self, request: Request) -> Response:
        user = await caller(self.guard, request)
        if user is None:
            return unauthorized()
        decision_id = request.path_params["decision_id"]
        try:
            record = await self.runtime.store.decision(user, decision_id)
        except StoreError:
            return store_down()
        if record is None:
            # 404, not 403: whether someone else's decision exists is nobody else's business.
            return problem(404, "Not Found", f"You have no decision {decision_id!r}.")
        locale = record.locale if record.locale in self.policy.locales else self.policy.default_locale
        return json_response(receipt(record, self.guard.compiled, locale))


def receipt(record: DecisionRecord, compiled: CompiledPolicy, locale: str) -> dict[str, Any]:
    """One decision as its owner reads it: the summary, then every item with its action, reasons and a
    sentence in `locale` (and its title when the route names a display field)."""
    return {
        **summary(record),
        "items": [
            {
                "id": item_id,
                # Only when the route names a display field (`fields: {title: ...}`).
                **({"title": record.title(index)} if record.titles is not None else {}),
                "action": action,
                "reasons": list(reasons),
                "because": list(because),
                "text": receipt_text(compiled, locale, reasons, because),
            }
            for index, (item_id, action, reasons, because) in enumerate(record.items)
        ],
    }


def summary(record: DecisionRecord) -> dict[str, Any]:
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
