"""`guardrail explain`: how one item is decided for one user and request, rule by rule."""

from __future__ import annotations

from typing import Any

from guardrail.authoring.scenario import Scenario, user_context
from guardrail.engine import Action, Reason
from guardrail.engine.compiled import category_spelling
from guardrail.engine.trace import HIDES, trace
from guardrail.explain.render import explanation, receipt_text
from guardrail.guard import Guard
from guardrail.review import ReviewDecision


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
    report = {**found.to_json(), "locale": ctx.locale, "text": text}
    return with_review(guard, report, item, fields.id, item.get(fields.categories, []), signals)


def with_review(
    guard: Guard, report: dict[str, Any], item: dict[str, Any], id_field: str, categories: list[str], signals: Any
) -> dict[str, Any]:
    """The report with the reviewers' decisions that bear on the item (`review`): a block decides it, with
    reason blocked_by_review alone, as the served guard decides it; an alias says how a category was read."""
    overlay, written, compiled = guard.overlay, guard.written, guard.compiled
    review: list[dict[str, Any]] = []
    for sent in categories:
        spelled = category_spelling(str(sent))
        if spelled in written.categories or spelled in written.category_aliases:
            continue  # the policy file itself says what it is
        decided = overlay.aliases.get(spelled) or overlay.categories.get(spelled)
        if decided is not None:
            review.append({**decided.to_json(), "says": _says(decided)})
    blocked = overlay.blocked.get(str(item.get(id_field)))
    if blocked is not None:
        review.append({**blocked.to_json(), "says": _says(blocked)})
        report["action"] = Action.HIDE.value
        report["reasons"] = [Reason.BLOCKED_BY_REVIEW.value]
        report["text"] = receipt_text(compiled, report["locale"], report["reasons"], signals)
        for rule in report["rules"]:
            if rule["rule"] == Reason.BLOCKED_BY_REVIEW.value:
                rule["verdict"], rule["why"] = HIDES, _says(blocked)
    report["review"] = review
    return report


def _says(decision: ReviewDecision) -> str:
    """A reviewer decision in one line: who, when, what and why."""
    what = {
        "label": f"read {decision.subject} as {decision.alias_of}"
        if decision.alias_of is not None
        else f"defined {decision.subject} ({'sensitive' if decision.sensitive else 'not sensitive'})",
        "block": f"blocked item {decision.subject} for everyone",
        "dismiss": "dismissed it",
    }[decision.decision]
    return f"reviewer {decision.reviewer} {what} on {decision.to_json()['at']}: {decision.note}"


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
    for decided in report.get("review", []):
        lines.append(f"review: {decided['says']}")
    reasons = ", ".join(report["reasons"]) or "none"
    lines.append(f"action: {report['action']}   reasons: {reasons}")
    lines.append(f"text ({report['locale']}): {report['text']}")
    return "\n".join(lines)
