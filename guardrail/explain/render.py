"""Turning the engine's decisions into plain-language sentences in the user's locale.

The engine decides facts and imports nothing of this module: the guard gives each context `explanation`
as its explainer, and the responder asks a `Notices` for the sentence about what a page hid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

from guardrail.caching import BoundedCache
from guardrail.engine import Action, CompiledPolicy, ItemDecision, Reason, UserContext
from guardrail.messages import message

_NOTICE_KEY = attrgetter("notice_key")
# Distinct (locale, count, reasons) mixes whose notice is kept.
NOTICES = 1024


def until_text(moment: datetime) -> str:
    """A moment as the page and the explanations show it (already in UTC)."""
    return moment.strftime("%Y-%m-%d %H:%M UTC")


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
    if ctx.paused_until is not None:
        text = f"{text} {message(locale, 'item.paused', until=until_text(ctx.paused_until))}"
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


class Notices:
    """One sentence about what a page hid, naming the rule that decided; discreet if it is sensitive.
    Memoized: the sentence depends only on the locale, the count and the (reason, topic) pairs."""

    def __init__(self, compiled: CompiledPolicy) -> None:
        self.compiled = compiled
        self._cache: BoundedCache[tuple[object, ...], str | None] = BoundedCache(NOTICES)

    def __call__(self, locale: str, hidden: Sequence[ItemDecision], paused_until: datetime | None = None) -> str | None:
        """`paused_until`: the end of the user's pause (`UserContext.paused_until`), which the sentence names."""
        return self._notice(locale, len(hidden), frozenset(map(_NOTICE_KEY, hidden)), paused_until)

    def by_kind(
        self,
        locale: str,
        hidden_by_kind: Mapping[tuple[Reason, str | None], int],
        paused_until: datetime | None = None,
    ) -> str | None:
        """The same sentence, from how many items were hidden for each notice key (as the per-item loop
        counts them: `CheckedItems.hidden_by_kind`)."""
        return self._notice(locale, sum(hidden_by_kind.values()), frozenset(hidden_by_kind), paused_until)

    def _notice(
        self, locale: str, count: int, kinds: frozenset[tuple[Reason, str | None]], paused_until: datetime | None
    ) -> str | None:
        key = (locale, count, kinds, paused_until)
        found = self._cache.get(key, key)
        if found is key:
            found = self._cache.put(key, _notice(self.compiled, locale, count, kinds, paused_until))
        return found  # type: ignore[return-value]


def _notice(
    compiled: CompiledPolicy,
    locale: str,
    count: int,
    kinds: Iterable[tuple[Reason, str | None]],
    paused_until: datetime | None = None,
) -> str | None:
    """`kinds`: the (deciding reason, muted topic) of the `count` hidden items."""
    deciding: set[Reason] = set()
    topics: set[str] = set()
    for reason, muted_topic in kinds:
        deciding.add(reason)
        if reason is Reason.TOPIC_MUTED and muted_topic is not None:
            topics.add(muted_topic)
    if not count:
        return None
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
    if reason is Reason.PERSONALIZATION_OFF and paused_until is not None:
        return message(locale, "notice.paused", n=count, until=until_text(paused_until))
    return message(locale, f"notice.{reason}", n=count)
