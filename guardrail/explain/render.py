"""Turning decisions into plain-language sentences in the user's locale."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from guardrail.engine.decisions import Action, ItemDecision, Reason
from guardrail.explain.catalog import message

if TYPE_CHECKING:
    from guardrail.engine.compiled import CompiledPolicy
    from guardrail.engine.context import UserContext


def explanation(ctx: UserContext, action: Action, signals: Sequence[str], inferred: bool) -> dict[str, Any]:
    locale = ctx.locale
    because: list[str]
    if not signals:
        text, because = message(locale, "item.popular"), []
    elif action is Action.DISCREET:
        # Safe on a shared screen: names no category and no signal.
        text, because = message(locale, "item.discreet"), []
    else:
        because = list(dict.fromkeys(signals))
        labels = message(locale, "list.and").join(ctx.compiled.label("signal", s, locale) for s in because)
        text = message(locale, "item.inferred" if inferred else "item.because", signals=labels)
    if ctx.gpc and signals:
        text = f"{text} {message(locale, 'item.gpc')}"
    return {"text": text, "because": because, "controls": ctx.compiled.controls_url}


def receipt_text(compiled: CompiledPolicy, locale: str, reasons: Sequence[str], because: Sequence[str]) -> str:
    """The sentence for one item of a decision receipt: why it was hidden, or why it was shown.
    Receipts are private to their owner, so unlike a discreet explanation they may name the data used."""
    if reasons:
        return message(locale, f"reason.{reasons[0]}")
    if not because:
        return message(locale, "item.popular")
    labels = message(locale, "list.and").join(compiled.label("signal", s, locale) for s in because)
    return message(locale, "item.because", signals=labels)


_DISCREET_REASONS = frozenset({Reason.SENSITIVE_NEEDS_OPT_IN})


def notice(ctx: UserContext, hidden: Sequence[ItemDecision]) -> str | None:
    """One sentence about what was hidden, naming the rule that decided; discreet if it is sensitive.
    Memoized per context: the sentence depends only on the count and the (reason, topic) pairs."""
    key = (len(hidden), frozenset([(d.reasons[0], d.muted_topic) for d in hidden]))
    notices = ctx.notices
    if key in notices:
        return notices[key]
    found = notices[key] = _notice(ctx, hidden)
    if len(notices) > 256:  # bounded: one entry per distinct mix of hidden reasons
        notices.clear()
    return found


def _notice(ctx: UserContext, hidden: Iterable[ItemDecision]) -> str | None:
    deciding: Counter[Reason] = Counter()
    topics: set[str] = set()
    for decision in hidden:
        deciding[decision.reasons[0]] += 1
        if decision.reasons[0] is Reason.TOPIC_MUTED and decision.muted_topic is not None:
            topics.add(decision.muted_topic)
    count = sum(deciding.values())
    if not count:
        return None
    locale, compiled = ctx.locale, ctx.compiled
    if len(deciding) > 1:
        text = message(locale, "notice.mixed", n=count)
        if Reason.GPC_OPT_OUT in deciding:
            text = f"{text} {message(locale, 'item.gpc')}"
        return text
    (reason,) = deciding
    if reason in _DISCREET_REASONS or any(compiled.is_sensitive(topic) for topic in topics):
        return message(locale, "notice.discreet", n=count)
    if reason is Reason.TOPIC_MUTED:
        if len(topics) == 1:
            (topic,) = topics
            return message(
                locale,
                "notice.topic_muted",
                n=count,
                topic=compiled.label("category", topic, locale),
            )
        return message(locale, "notice.topics_muted", n=count)
    return message(locale, f"notice.{reason}", n=count)
