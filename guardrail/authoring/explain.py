"""`guardrail explain`: how one item is decided for one user and request, rule by rule."""

from __future__ import annotations

from typing import Any

from guardrail.authoring.scenario import Scenario, user_context
from guardrail.engine import Action
from guardrail.engine.trace import HIDES, trace
from guardrail.explain.render import explanation, receipt_text
from guardrail.guard import Guard


def explain_item(
    guard: Guard, scenario: Scenario, item: dict[str, Any], *, locale: str | None = None
) -> dict[str, Any]:
    """The trace of `item` as JSON (`guardrail explain --json`), with the text the user would read."""
    ctx = user_context(guard, scenario, locale=locale)
    route = guard.route_named(scenario.route)
    fields = route.fields
    signals = item.get(fields.signals)
    if signals is None:
        signals = list(route.default_signals)
    inferred = bool(item.get(fields.inferred, False))
    found = trace(ctx, item.get(fields.categories, []), signals, item.get(fields.signal_age_seconds), inferred)
    if found.action is Action.HIDE:
        # What the user's decision receipt says of it (docs/api.md): the deciding reason.
        text = receipt_text(guard.compiled, ctx.locale, [r.value for r in found.reasons], signals)
    else:
        text = explanation(ctx, found.action, signals, inferred)["text"]
    return {**found.to_json(), "locale": ctx.locale, "text": text}


def render(report: dict[str, Any]) -> str:
    """The trace for a person: rules in precedence order, then the score part by part, then the outcome."""
    lines = ["rules, in order of precedence (the first that hides decides the reason shown):"]
    for rule in report["rules"]:
        mark = "HIDES " if rule["verdict"] == HIDES else "passes"
        lines.append(f"  {mark}  {rule['rule']:<24} {rule['why']}")
    parts = report["score_parts"]
    if parts:
        shown = " + ".join(f"{name} {points}" for name, points in parts.items())
        total = sum(parts.values())
        capped = f" = {total}, capped at 100" if total > report["score"] else ""
        lines.append(f"invasiveness: {shown}{capped} = {report['score']}")
        lines.append(f"  discreet_at {report['discreet_at']}, hide_at {report['hide_at']}")
    else:
        lines.append("invasiveness: not scored (the item relies on no personal data)")
    reasons = ", ".join(report["reasons"]) or "none"
    lines.append(f"action: {report['action']}   reasons: {reasons}")
    lines.append(f"text ({report['locale']}): {report['text']}")
    return "\n".join(lines)
