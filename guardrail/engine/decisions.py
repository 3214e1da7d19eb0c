"""What the engine decides about one item: an action, the reasons, and the explanation to attach."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    KEEP = "keep"
    DISCREET = "discreet"
    HIDE = "hide"


class Reason(StrEnum):
    """Why an item was hidden. Declared in order of precedence (design §3): the first reason decides."""

    MINOR_PROTECTION = "minor_protection"
    GPC_OPT_OUT = "gpc_opt_out"
    # The user's explicit controls. When the store cannot answer they are unknown, so
    # store_unavailable stands in their place.
    STORE_UNAVAILABLE = "store_unavailable"
    PERSONALIZATION_OFF = "personalization_off"
    TOPIC_MUTED = "topic_muted"
    SIGNAL_OFF = "signal_off"
    SENSITIVE_NEEDS_OPT_IN = "sensitive_needs_opt_in"
    TCF_NO_CONSENT = "tcf_no_consent"
    NO_CONSENT = "no_consent"
    TOO_INVASIVE = "too_invasive"


PRECEDENCE: dict[Reason, int] = {reason: rank for rank, reason in enumerate(Reason)}


@dataclass(frozen=True, slots=True)
class ItemDecision:
    action: Action
    reasons: tuple[Reason, ...]  # sorted by precedence; empty unless hidden
    score: int
    because: tuple[str, ...]  # the signals the recommendation relied on
    explanation: dict[str, Any] | None  # attached to kept items; shared between equal decisions
    muted_topic: str | None = None  # the muted category that hid it, for the notice

    @property
    def hidden(self) -> bool:
        return self.action is Action.HIDE
