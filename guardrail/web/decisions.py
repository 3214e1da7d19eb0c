"""`GET {prefix}/v1/decisions`, `GET {prefix}/v1/decisions/{id}` and `GET {prefix}/v1/decisions/{id}/items/{item}`:
the caller's decision receipts (docs/api.md), each item's reasons in plain language, and one item with what
the caller can do about it (guardrail/web/item_view.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.engine import CompiledPolicy
from guardrail.errors import StoreError
from guardrail.explain.render import receipt_text
from guardrail.guard import Guard
from guardrail.runtime import Runtime
from guardrail.state import UserState, format_time
from guardrail.store import DecisionRecord, Store
from guardrail.web.common import caller, choose_locale, json_response, route, store_down, unauthorized
from guardrail.web.item_view import item_view
from guardrail.web.problem import problem


def decision_routes(runtime: Runtime, guard: Guard, prefix: str) -> list[Route]:
    receipts = Receipts(runtime, guard)
    return [
        route(f"{prefix}/v1/decisions", receipts.decisions, "GET"),
        route(f"{prefix}/v1/decisions/{{decision_id}}", receipts.decision, "GET"),
        # `path`: an item id may hold a slash (its link writes it %2F, which servers decode).
        route(f"{prefix}/v1/decisions/{{decision_id}}/items/{{item_id:path}}", receipts.item, "GET"),
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

    async def item(self, request: Request) -> Response:
        user = await caller(self.guard, request)
        if user is None:
            return unauthorized()
        decision_id, item_id = request.path_params["decision_id"], request.path_params["item_id"]
        try:
            state, found, reported = await lookup_item(self.runtime.store, user, decision_id, item_id)
        except StoreError:
            return store_down()
        if found is None:
            return problem(404, "Not Found", f"You have no decision {decision_id!r} with an item {item_id!r}.")
        record, index = found
        locale = choose_locale(self.guard, request, state.locale if state is not None else None)
        now = datetime.now(UTC)
        return json_response(item_view(self.guard, record, index, locale, state, now, reported))


class ItemLookup(NamedTuple):
    state: UserState | None  # the caller's controls now
    found: tuple[DecisionRecord, int] | None  # the record and the item's position; None: not theirs, or gone
    reported: str | None  # the reason the caller reported the item with; None: not reported


async def lookup_item(store: Store, user: str, decision_id: str, item_id: str) -> ItemLookup:
    """What one item's view (guardrail/web/item_view.py) is made of, for the JSON twin and the "why?" page alike.
    Raises StoreError."""
    state = await store.load(user)
    found = await find_item(store, user, decision_id, item_id)
    reported = await reported_reason(store, user, decision_id, item_id) if found is not None else None
    return ItemLookup(state, found, reported)


async def find_item(store: Store, user: str, decision_id: str, item_id: str) -> tuple[DecisionRecord, int] | None:
    """The caller's decision record and the item's position in it; None when either is not theirs or gone.
    Raises StoreError."""
    record = await store.decision(user, decision_id)
    index = record.index_of(item_id) if record is not None else None
    return (record, index) if record is not None and index is not None else None


async def reported_reason(store: Store, user: str, decision_id: str, item_id: str) -> str | None:
    """The reason the caller gave when they reported the item, if they did. Raises StoreError."""
    for report in await store.reports(user):
        if report.decision == decision_id and report.item == item_id:
            return report.reason
    return None


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
