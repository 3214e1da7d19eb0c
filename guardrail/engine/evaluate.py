"""The per-item rules of docs/architecture.md §3. Pure and synchronous: no I/O, no clock, no ASGI.

A decision is facts: an action, the reasons, the score, the signals relied on. The words a kept item
carries come from the context's explainer, given by whoever builds the context."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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


class Facts(NamedTuple):
    """What the rules found about one item shape: the decision is made from these, and `guardrail explain`
    prints them (guardrail/engine/trace.py), so the trace is what the engine computed."""

    categories: tuple[str, ...]  # the policy's spelling
    signals: tuple[str, ...]
    fresh: bool
    inferred: bool
    sensitive: tuple[str, ...]  # the sensitive ones among `categories`
    unknown: tuple[str, ...]  # those the policy does not define
    unknown_rule: str  # the policy's `unknown_categories` if any is unknown, else "keep"
    muted_topic: str | None
    # Per signal relied on, the reasons it may not be used (empty: it may); personalized items only.
    signal_reasons: dict[str, tuple[Reason, ...]]
    not_opted_in: tuple[str, ...]  # sensitive categories the user has not opted into
    score_parts: dict[str, int]  # weight name -> points (before the cap at 100)
    score: int
    reasons: frozenset[Reason]


def facts(
    ctx: UserContext,
    categories: tuple[str, ...],
    signals: tuple[str, ...],
    fresh: bool,
    inferred: bool,
) -> Facts:
    compiled = ctx.compiled
    weights = compiled.weights
    personalized = bool(signals)
    sensitive = tuple(c for c in categories if compiled.is_sensitive(c))
    unknown = tuple(c for c in categories if compiled.is_unknown(c))
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

    signal_reasons: dict[str, tuple[Reason, ...]] = {}
    not_opted_in: tuple[str, ...] = ()
    parts: dict[str, int] = {}
    score = 0
    if personalized:
        for signal in signals:
            # A signal the policy does not know has no purpose we could have consent for.
            found = signal_reasons[signal] = ctx.signal_reasons.get(signal, (Reason.NO_CONSENT,))
            reasons.update(found)
        not_opted_in = tuple(
            c for c in sensitive if not any(prefix in ctx.sensitive_opt_ins for prefix in compiled.prefixes(c))
        )
        if ctx.degraded and sensitive:
            # Sensitive rules fail closed: an opt-in read from a cache we could not check is not enough.
            reasons.add(Reason.STORE_UNAVAILABLE)
        elif not_opted_in:
            reasons.add(Reason.SENSITIVE_NEEDS_OPT_IN)
        infos = [compiled.signals[s] for s in signals if s in compiled.signals]
        parts = {
            "sensitive_category": weights.sensitive_category if sensitive else 0,
            "signal_sensitivity": weights.signal_sensitivity * max((i.sensitivity for i in infos), default=3),
            "fresh_activity": weights.fresh_activity if fresh else 0,
            "inferred": weights.inferred if inferred else 0,
            "third_party": weights.third_party if any(i.third_party for i in infos) else 0,
        }
        score = min(sum(parts.values()), 100)
        if score >= compiled.hide_at:
            reasons.add(Reason.TOO_INVASIVE)
    return Facts(
        categories,
        signals,
        fresh,
        inferred,
        sensitive,
        unknown,
        unknown_rule,
        muted_topic,
        signal_reasons,
        not_opted_in,
        parts,
        score,
        frozenset(reasons),
    )


def action_of(ctx: UserContext, found: Facts) -> Action:
    if found.reasons:
        return Action.HIDE
    # Sensitive items are shown discreetly even when opted into (docs/architecture.md §3), and
    # non-personalized ones too: a shared screen should not announce a health topic.
    discreet = found.sensitive or found.score >= ctx.compiled.discreet_at or found.unknown_rule == "discreet"
    return Action.DISCREET if discreet else Action.KEEP


def _decide(
    ctx: UserContext,
    categories: tuple[str, ...],
    signals: tuple[str, ...],
    fresh: bool,
    inferred: bool,
) -> ItemDecision:
    found = facts(ctx, categories, signals, fresh, inferred)
    action = action_of(ctx, found)
    unknown = bool(found.unknown)
    if action is Action.HIDE:
        ordered = tuple(sorted(found.reasons, key=PRECEDENCE.__getitem__))
        return ItemDecision(action, ordered, found.score, signals, None, found.muted_topic, unknown, categories)
    explained = ctx.explain(ctx, action, signals, inferred) if ctx.explain is not None else None
    return ItemDecision(action, (), found.score, signals, explained, None, unknown, categories)
