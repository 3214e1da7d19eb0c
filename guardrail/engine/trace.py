"""How one item was decided, rule by rule (`guardrail explain`, docs/integrate.md "Change a policy safely").

The trace is made from the same `Facts` the engine decides from (guardrail/engine/evaluate.py), so it cannot
disagree with the decision: every rule in precedence order (docs/architecture.md §3) with its verdict and why,
the invasiveness score part by part, the action and the reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from guardrail.engine.context import UserContext
from guardrail.engine.decisions import PRECEDENCE, Action, Reason
from guardrail.engine.evaluate import Facts, action_of, facts

HIDES = "hides"
PASSES = "passes"


class RuleVerdict(NamedTuple):
    rule: Reason
    verdict: str  # HIDES or PASSES
    why: str


class Trace(NamedTuple):
    action: Action
    reasons: tuple[Reason, ...]  # in precedence order: the first decides
    score: int
    score_parts: dict[str, int]
    discreet_at: int
    hide_at: int
    rules: tuple[RuleVerdict, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "reasons": [reason.value for reason in self.reasons],
            "score": self.score,
            "score_parts": dict(self.score_parts),
            "discreet_at": self.discreet_at,
            "hide_at": self.hide_at,
            "rules": [{"rule": r.rule.value, "verdict": r.verdict, "why": r.why} for r in self.rules],
        }


def trace(
    ctx: UserContext,
    categories: Sequence[str],
    signals: Sequence[str],
    signal_age_seconds: float | None = None,
    inferred: bool = False,
) -> Trace:
    """Decide one item as `decide` does, keeping the reasoning (not memoized: this is for people)."""
    compiled = ctx.compiled
    fresh = signal_age_seconds is not None and signal_age_seconds < compiled.fresh_seconds
    found = facts(ctx, tuple(compiled.category_id(c) for c in categories), tuple(signals), fresh, inferred)
    action = action_of(ctx, found)
    reasons = tuple(sorted(found.reasons, key=PRECEDENCE.__getitem__)) if action is Action.HIDE else ()
    rules = tuple(
        RuleVerdict(rule, HIDES if rule in found.reasons else PASSES, _why(ctx, found, rule)) for rule in Reason
    )
    return Trace(action, reasons, found.score, found.score_parts, compiled.discreet_at, compiled.hide_at, rules)


def _by_reason(found: Facts, reason: Reason) -> list[str]:
    return [signal for signal, reasons in found.signal_reasons.items() if reason in reasons]


def _names(values: Sequence[str]) -> str:
    return ", ".join(values)


def _why(ctx: UserContext, found: Facts, rule: Reason) -> str:
    personalized = bool(found.signals)
    if rule is Reason.MINOR_PROTECTION:
        if not ctx.minor:
            return "the user is not known to be a minor"
        if rule in found.reasons:
            what = "personalized" if personalized else "sensitive" if found.sensitive else "of an unreviewed category"
            return f"the user is a minor and the item is {what}"
        return "the user is a minor, but the item is not personalized, sensitive or of an unreviewed category"
    if rule is Reason.UNKNOWN_CATEGORY:
        if not found.unknown:
            return "every category is in the policy"
        return f"{_names(found.unknown)} not in the policy; unknown_categories: {ctx.compiled.unknown_categories}"
    if rule is Reason.BLOCKED_BY_REVIEW:
        return "a reviewer blocks an item by its id (guardrail explain --store says if one did)"
    if rule is Reason.TOPIC_MUTED:
        if found.muted_topic is not None:
            return f"the user muted or snoozed {found.muted_topic}"
        return "no category of the item is muted or snoozed"
    if rule is Reason.TOO_INVASIVE:
        if not personalized:
            return "not personalized: no invasiveness score"
        sign = ">=" if rule in found.reasons else "<"
        return f"score {found.score} {sign} hide_at {ctx.compiled.hide_at}"
    if rule is Reason.SENSITIVE_NEEDS_OPT_IN:
        if not found.sensitive:
            return "no sensitive category"
        if not personalized:
            return "not personalized: sensitive topics need no opt-in"
        if ctx.degraded:
            return "the store is degraded: opt-ins are not trusted (store_unavailable decides)"
        if found.not_opted_in:
            return f"the user has not opted into {_names(found.not_opted_in)}"
        return f"the user opted into {_names(found.sensitive)}"
    if not personalized:
        return "not personalized: relies on no personal data"
    signals = _by_reason(found, rule)
    if rule is Reason.STORE_UNAVAILABLE and not signals and rule in found.reasons:
        return f"the store is degraded and {_names(found.sensitive)} is sensitive"
    if signals:
        return f"{_names(signals)}: {_SIGNAL_WHY[rule]}"
    return f"no signal relied on ({_names(found.signals)}) is stopped by this rule"


_SIGNAL_WHY = {
    Reason.GPC_OPT_OUT: "the browser sent Global Privacy Control, and this use follows it",
    Reason.STORE_UNAVAILABLE: "the user's choices could not be read (the store is unavailable)",
    Reason.PERSONALIZATION_OFF: "the user turned personalization off",
    Reason.SIGNAL_OFF: "the user turned this signal off",
    Reason.TCF_NO_CONSENT: "the TC string refuses the purpose",
    Reason.NO_CONSENT: "no consent to the purpose (or the signal is not in the policy)",
}
