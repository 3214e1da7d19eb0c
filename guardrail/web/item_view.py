"""One item of one of the caller's decisions, as its "why am I seeing this?" page and its JSON twin show it
(docs/api.md, "Why am I seeing this?"): what was decided and by which rule, the data used (as labels), the
topics, and what the caller can do about it in one step.

Both `GET {prefix}/v1/decisions/{id}/items/{item}` and the HTML page at `{prefix}/why/{id}/{item}` are made
from `item_view`, and the page's one-click forms do exactly what its `actions` say.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from guardrail.explain.render import receipt_text
from guardrail.guard import Guard
from guardrail.messages import message
from guardrail.state import REPORT_REASONS, UserState, format_time
from guardrail.store import DecisionRecord

# "Snooze {topic} for 30 days".
SNOOZE_DAYS = 30
# What each one-click action is called in `actions` and in the page's form field `do`.
MUTE, SNOOZE, SIGNAL_OFF, REPORT = "mute", "snooze", "signal_off", "report"
MAX_NOTE_CHARS = 500


def item_view(
    guard: Guard,
    record: DecisionRecord,
    index: int,
    locale: str,
    state: UserState | None,
    now: datetime,
    reported: str | None = None,
) -> dict[str, Any]:
    """Item `index` of `record` in `locale`; `state`: the caller's controls now (what is already muted or off
    is not offered again); `reported`: the reason of the caller's report of it, if any."""
    compiled, policy, prefix = guard.compiled, guard.policy, guard.prefix or ""
    item_id, action, reasons, because = record.items[index]
    topics = list(dict.fromkeys(record.topics(index)))
    mutes = state.active_mutes(now) if state is not None else {}
    signals_now = state.signals if state is not None else {}
    view: dict[str, Any] = {
        "decision": record.id,
        "item": item_id,
        "title": record.title(index),
        "created_at": format_time(datetime.fromtimestamp(record.created_at, UTC)),
        "route": record.route,
        "action": action,
        "reasons": list(reasons),
        "text": receipt_text(compiled, locale, reasons, because),
        "rule": rule_text(locale, action, reasons, because),
        "categories": [
            {
                "name": name,
                "label": compiled.label("category", name, locale),
                "sensitive": name in compiled.sensitive_categories,
                # A category the policy does not define cannot be muted by name (docs/policy: unknown_categories).
                "known": name in policy.categories,
            }
            for name in topics
        ],
        "signals": [{"name": name, "label": compiled.label("signal", name, locale)} for name in because],
        "reported": reported,
    }
    controls = f"{prefix}/v1/controls"
    actions: list[dict[str, Any]] = []
    for topic in view["categories"]:
        name, label = topic["name"], topic["label"]
        if not topic["known"] or (name in mutes and mutes[name] is None):
            continue  # unknown to the policy, or already muted for good
        actions.append(
            _patch(MUTE, controls, {"muted": {name: {"until": None}}}, message(locale, "why.mute", topic=label))
            | {"category": name}
        )
        until = format_time(now + timedelta(days=SNOOZE_DAYS))
        actions.append(
            _patch(
                SNOOZE,
                controls,
                {"muted": {name: {"until": until}}},
                message(locale, "why.snooze", topic=label, days=SNOOZE_DAYS),
            )
            | {"category": name, "until": until}
        )
    for signal in view["signals"]:
        name = signal["name"]
        if name not in policy.signals or signals_now.get(name) is False:
            continue
        text = message(locale, "why.signal_off", signal=signal["label"])
        actions.append(_patch(SIGNAL_OFF, controls, {"signals": {name: False}}, text) | {"signal": name})
    if reported is None:
        actions.append(
            {
                "kind": REPORT,
                "text": message(locale, "why.report"),
                "reasons": [{"reason": r, "text": message(locale, f"why.report.{r}")} for r in REPORT_REASONS],
                "method": "POST",
                "href": f"{prefix}/v1/reports",
                "content_type": "application/json",
                "body": {"decision": record.id, "item": item_id, "reason": REPORT_REASONS[0]},
            }
        )
    view["actions"] = actions
    return view


def _patch(kind: str, href: str, body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "text": text,
        "method": "PATCH",
        "href": href,
        "content_type": "application/merge-patch+json",
        "body": body,
    }


def rule_text(locale: str, action: str, reasons: tuple[str, ...] | list[str], because: tuple[str, ...]) -> str:
    """Which rule decided, in plain words: the deciding reason of a hidden item, else why it could be shown."""
    if reasons:
        return message(locale, f"reason.{reasons[0]}")
    if action == "discreet":
        return message(locale, "why.rule.discreet")
    return message(locale, "why.rule.personal" if because else "why.rule.popular")
