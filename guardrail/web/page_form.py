"""The controls page's form as the merge patch it stands for (docs/api.md, "The controls page").

The whole form is one change: every purpose, signal and sensitive topic gets the answer the page shows, and
names the policy does not know are passed on, so that `validate_patch` names them as the API does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from guardrail.echo import echo
from guardrail.policy.models import Policy
from guardrail.state import format_time

TOPIC_CHOICES = ("keep", "show", "snooze7", "snooze30", "mute")


def form_patch(
    policy: Policy, sensitive_categories: Sequence[str], form: Mapping[str, str], now: datetime
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The merge patch the whole form stands for, and the problems only the form can have.
    Names the policy does not know are passed on, so `validate_patch` names them like the API does."""
    problems: list[tuple[str, str]] = []
    signals: dict[str, Any] = {name: f"signal.{name}" in form for name in policy.signals}
    sensitive: dict[str, Any] = {name: f"sensitive.{name}" in form for name in sensitive_categories}
    muted: dict[str, Any] = {}
    # Every purpose gets the answer the user gave on the page: ticked is a yes, unticked a no.
    consent = {name: "granted" if f"consent.{name}" in form else "denied" for name in policy.purposes}
    body: dict[str, Any] = {"personalization": "personalization" in form, "consent": consent}
    for key, value in form.items():
        kind, _, name = key.partition(".")
        if kind == "signal":
            signals.setdefault(name, True)
        elif kind == "consent":
            consent.setdefault(name, "granted")
        elif kind == "sensitive":
            sensitive.setdefault(name, True)
        elif kind == "topic":
            if value not in TOPIC_CHOICES:
                problems.append((f"muted.{echo(name)}", f"must be one of {', '.join(TOPIC_CHOICES)}"))
            elif value == "show":
                muted[name] = None
            elif value == "mute":
                muted[name] = {"until": None}
            elif value.startswith("snooze"):
                days = int(value.removeprefix("snooze"))
                muted[name] = {"until": format_time(now + timedelta(days=days))}
            elif name not in policy.categories:  # "keep" of a topic that does not exist
                muted[name] = None
        elif key == "locale":
            body["locale"] = value or None
        elif key not in ("csrf", "personalization"):
            problems.append((echo(key), "is not a field of this form"))
    body["signals"] = signals
    body["sensitive"] = sensitive
    if muted:
        body["muted"] = muted
    return body, problems
