"""What the engine decides about one item: an action, the reasons, and what was relied on."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson


class Action(StrEnum):
    KEEP = "keep"
    DISCREET = "discreet"
    HIDE = "hide"


class Reason(StrEnum):
    """Why an item was hidden. Declared in order of precedence (docs/architecture.md §3): the first reason decides."""

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
    # The policy's `unknown_categories: hide`: a label nobody has reviewed decides only when nothing else does.
    UNKNOWN_CATEGORY = "unknown_category"
    # A reviewer blocked the item for everyone (docs/review.md); a blocked item carries this reason alone.
    BLOCKED_BY_REVIEW = "blocked_by_review"


PRECEDENCE: dict[Reason, int] = {reason: rank for rank, reason in enumerate(Reason)}


@dataclass(frozen=True, slots=True)
class ItemDecision:
    action: Action
    reasons: tuple[Reason, ...]  # sorted by precedence; empty unless hidden
    score: int
    because: tuple[str, ...]  # the signals the recommendation relied on
    # Attached to kept items, made by the context's explainer (None without one); shared between equal decisions.
    explanation: dict[str, Any] | None
    muted_topic: str | None = None  # the muted category that hid it, for the notice
    unknown: bool = False  # one of its categories is not in the policy (counted, whatever the action)
    # The item shape's categories, as the policy spells them: a decision is made per shape, so the record
    # and the "why?" page know an item's topics from its decision, without reading the item again.
    categories: tuple[str, ...] = ()
    # Derived once here so the per-item loops of a response test plain attributes: in
    # Python 3.11 every `Action.HIDE` lookup goes through an enum descriptor.
    hidden: bool = field(init=False)
    discreet: bool = field(init=False)
    # The deciding reason (None when kept), and what a page's notice is keyed by: read per hidden item.
    first_reason: Reason | None = field(init=False, repr=False, compare=False)
    notice_key: tuple[Reason, str | None] | None = field(init=False, repr=False, compare=False)
    # The explanation serialized once; orjson copies a Fragment's bytes as they are.
    explanation_json: orjson.Fragment | None = field(init=False, repr=False, compare=False)
    # A kept item's explanation with its own `why` link (guardrail.why_links) starts with these bytes: the
    # explanation's without the closing brace, then `,"why":"`. None when hidden or without an explanation.
    link_head: bytes | None = field(init=False, repr=False, compare=False)
    # The same, closed with a NUL byte where the link goes: what a page gets before `fill_links` writes each
    # item's link there (orjson escapes every NUL it writes itself, so each raw one is a placeholder).
    why_json: orjson.Fragment | None = field(init=False, repr=False, compare=False)
    # [action, reasons, because, categories] serialized once, for decision records written to a store.
    record_json: orjson.Fragment = field(init=False, repr=False, compare=False)
    # What the C loop (guardrail/_speedups.c) reads of a decision, in one attribute: (hidden, discreet,
    # unknown, explanation, explanation_json, notice_key, why_json).
    loop_facts: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", self.action is Action.HIDE)
        object.__setattr__(self, "discreet", self.action is Action.DISCREET)
        first = self.reasons[0] if self.reasons else None
        object.__setattr__(self, "first_reason", first)
        object.__setattr__(self, "notice_key", (first, self.muted_topic) if first is not None else None)
        raw = orjson.dumps(self.explanation) if self.explanation is not None else None
        fragment = orjson.Fragment(raw) if raw is not None else None
        object.__setattr__(self, "explanation_json", fragment)
        head = raw[:-1] + b',"why":"' if raw is not None and not self.hidden else None
        object.__setattr__(self, "link_head", head)
        why = orjson.Fragment(head + b'\x00"}') if head is not None else None
        object.__setattr__(self, "why_json", why)
        record = orjson.dumps(
            [self.action.value, [r.value for r in self.reasons], list(self.because), list(self.categories)]
        )
        object.__setattr__(self, "record_json", orjson.Fragment(record))
        facts = (self.hidden, self.discreet, self.unknown, self.explanation, fragment, self.notice_key, why)
        object.__setattr__(self, "loop_facts", facts)
