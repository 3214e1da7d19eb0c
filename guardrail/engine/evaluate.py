"""The per-item rules of docs/architecture.md §3. Pure and synchronous: no I/O, no clock, no ASGI.

A decision is facts: an action, the reasons, the score, the signals relied on. The words a kept item
carries come from the context's explainer, given by whoever builds the context."""

from __future__ import annotations

from collections.abc import Sequence

from guardrail.engine.context import UserContext
from guardrail.engine.decisions import PRECEDENCE, Action, ItemDecision, Reason


def memo_key(categories: Sequence[str], signals: Sequence[str], fresh: bool, inferred: bool) -> tuple[object, ...]:
    """An item's shape, as the memo keys it: one flat tuple (the loops of guardrail/engine/loop.py and
    guardrail/_speedups.c build the same one inline), which hashes and compares in one pass where a
    tuple of tuples takes a call per level."""
    return (fresh, inferred, len(categories), *categories, *signals)


def decide(
    ctx: UserContext,
    categories: Sequence[str],
    signals: Sequence[str],
    signal_age_seconds: float | None = None,
    inferred: bool = False,
) -> ItemDecision:
    """Decide one item. Items of the same shape get the same (shared) decision object."""
    compiled = ctx.compiled
    fresh = signal_age_seconds is not None and signal_age_seconds < compiled.fresh_seconds
    key = memo_key(categories, signals, fresh, inferred)
    found = ctx.memo.get(key)
    if found is not None:
        return found
    # The memo is keyed by the categories as sent (the C loop builds the same key): they are spelled the
    # policy's way here, where the decision is made, so that both loops decide alike.
    category_id = compiled.category_id
    decision = _decide(ctx, tuple([category_id(c) for c in categories]), tuple(signals), fresh, inferred)
    return ctx.memo.put(key, decision)


def _decide(
    ctx: UserContext,
    categories: tuple[str, ...],
    signals: tuple[str, ...],
    fresh: bool,
    inferred: bool,
) -> ItemDecision:
    compiled = ctx.compiled
    weights = compiled.weights
    personalized = bool(signals)
    sensitive = [c for c in categories if compiled.is_sensitive(c)]
    unknown = any(compiled.is_unknown(c) for c in categories)
    # A label nobody has reviewed may be anything: unless the policy says to keep it, it is treated
    # with care (shown discreetly, or hidden), and for a minor like a sensitive one.
    unknown_rule = compiled.unknown_categories if unknown else "keep"
    reasons: set[Reason] = set()

    if ctx.minor and (personalized or sensitive or unknown_rule != "keep"):
        reasons.add(Reason.MINOR_PROTECTION)
    if unknown_rule == "hide":
        reasons.add(Reason.UNKNOWN_CATEGORY)

    muted_topic = None
    for category in categories:
        for prefix in compiled.prefixes(category):
            if prefix in ctx.muted:
                muted_topic = prefix
                reasons.add(Reason.TOPIC_MUTED)
                break

    score = 0
    if personalized:
        for signal in signals:
            # A signal the policy does not know has no purpose we could have consent for.
            reasons.update(ctx.signal_reasons.get(signal, (Reason.NO_CONSENT,)))
        if ctx.degraded and sensitive:
            # Sensitive rules fail closed: an opt-in read from a cache we could not check is not enough.
            reasons.add(Reason.STORE_UNAVAILABLE)
        elif sensitive and not all(
            any(prefix in ctx.sensitive_opt_ins for prefix in compiled.prefixes(c)) for c in sensitive
        ):
            reasons.add(Reason.SENSITIVE_NEEDS_OPT_IN)
        infos = [compiled.signals[s] for s in signals if s in compiled.signals]
        score = (
            (weights.sensitive_category if sensitive else 0)
            + weights.signal_sensitivity * max((i.sensitivity for i in infos), default=3)
            + (weights.fresh_activity if fresh else 0)
            + (weights.inferred if inferred else 0)
            + (weights.third_party if any(i.third_party for i in infos) else 0)
        )
        score = min(score, 100)
        if score >= compiled.hide_at:
            reasons.add(Reason.TOO_INVASIVE)

    if reasons:
        ordered = tuple(sorted(reasons, key=PRECEDENCE.__getitem__))
        return ItemDecision(Action.HIDE, ordered, score, signals, None, muted_topic, unknown)
    # Sensitive items are shown discreetly even when opted into (docs/architecture.md §3), and
    # non-personalized ones too: a shared screen should not announce a health topic.
    discreet = sensitive or score >= compiled.discreet_at or unknown_rule == "discreet"
    action = Action.DISCREET if discreet else Action.KEEP
    explained = ctx.explain(ctx, action, signals, inferred) if ctx.explain is not None else None
    return ItemDecision(action, (), score, signals, explained, None, unknown)
