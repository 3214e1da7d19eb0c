"""What a checked page says about itself: the `guardrail` summary, the `Guardrail-*` headers, its outcome
label and the decision record the user can look up later (docs/integrate.md, "What comes back").

One source for both ways of checking a page: the responder (the middleware's buffered JSON) and
`InProcess.check` (items the service holds as Python objects) write exactly these.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from guardrail.bodies import item_titles
from guardrail.engine import CheckedItems, UserContext
from guardrail.representation import PRIVATE
from guardrail.store import DecisionRecord

_PRIVATE = PRIVATE[1].decode()


def summary(
    decision: str, mode: str, policy: str, kept: int, hidden: int, degraded: bool, notice: str | None
) -> dict[str, Any]:
    """The `guardrail` object of an annotated response."""
    return {
        "decision": decision,
        "mode": mode,
        "policy": policy,
        "kept": kept,
        "hidden": hidden,
        "degraded": degraded,
        "notice": notice,
    }


def decision_headers(decision: str, mode: str, hidden: int, degraded: bool) -> list[tuple[bytes, bytes]]:
    """`Guardrail-Decision`, `Guardrail-Mode`, `Guardrail-Hidden`, and `Guardrail-Degraded: 1` when a
    fail mode applied, as ASGI header pairs."""
    headers = [
        (b"guardrail-decision", decision.encode()),
        (b"guardrail-mode", mode.encode()),
        (b"guardrail-hidden", str(hidden).encode()),
    ]
    if degraded:
        headers.append((b"guardrail-degraded", b"1"))
    return headers


def header_map(decision: str, mode: str, hidden: int, degraded: bool) -> dict[str, str]:
    """The same headers as `decision_headers`, spelled for a Starlette response (in-process checks),
    and `Cache-Control: private, no-store` in enforce mode, as the middleware sends an enforced page."""
    headers = {"Guardrail-Decision": decision, "Guardrail-Mode": mode, "Guardrail-Hidden": str(hidden)}
    if degraded:
        headers["Guardrail-Degraded"] = "1"
    if mode == "enforce":
        headers["Cache-Control"] = _PRIVATE
    return headers


def outcome(mode: str, degraded: bool) -> str:
    """The `outcome` label of a checked page (guardrail_requests_total)."""
    if mode != "enforce":
        return "shadow"
    return "degraded" if degraded else "enforced"


def decision_record(
    decision: str,
    user: str | None,
    route: str,
    mode: str,
    policy: str,
    ctx: UserContext,
    checked: CheckedItems,
    items: list[Any],
    fields: RecordedFields,
) -> DecisionRecord | None:
    """What the user can look up later about one checked page (`route` its template, `items` the page's
    items as checked, `fields` where they keep their title)."""
    if user is None:
        return None  # nobody could ever ask for an anonymous receipt
    title = fields.title
    return DecisionRecord(
        id=decision,
        user=user,
        created_at=time.time(),
        route=route,
        mode=mode,
        policy=policy,
        locale=ctx.locale,
        degraded=ctx.degraded,
        # The decisions are shared, immutable objects: keeping references costs nothing now,
        # and the receipt is spelled out only if someone asks for it.
        item_ids=checked.item_ids,
        decisions=checked.decisions,
        distinct=checked.distinct,
        per_item=checked.per_item,
        # Only when the route names a display field.
        titles=item_titles(items, title) if title is not None else None,
    )


class RecordedFields(Protocol):
    """Where a route's items keep what a decision record keeps of them besides their id."""

    @property
    def title(self) -> str | None: ...
