"""Human review as plain data (docs/review.md): what is seen (`Sighting`), what waits for a person
(`QueueEntry`), what a person decided (`ReviewDecision`, also the audit entry), and all the decisions
in force (`Overlay`), which the guard merges into the live policy.

Standard library only: the store keeps these, the web surface shows them, the guard applies them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

Kind = Literal["unknown_category", "reported_item", "flagged_item"]
KINDS: tuple[Kind, ...] = ("unknown_category", "reported_item", "flagged_item")
DECISIONS = ("label", "block", "dismiss")
# What one entry keeps of where it was seen: a few examples are enough for a person to look.
MAX_EXAMPLES = 5
MAX_ROUTES = 5
MAX_NOTE_CHARS = 2000
TITLE_CHARS = 80  # as decision records keep titles


def entry_id(kind: str, subject: str) -> str:
    """The entry's id, the same on every replica and after a restart: a digest of what it is about."""
    return hashlib.sha256(f"{kind}\0{subject}".encode()).hexdigest()[:16]


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Sighting(NamedTuple):
    """One thing seen that a person should look at: `subject` is a category id or an item id."""

    kind: str
    subject: str
    route: str | None
    item: str | None
    at: float
    reason: str | None = None  # a report's reason
    title: str | None = None  # an item's display title, when the route names one

    @property
    def entry(self) -> str:
        return entry_id(self.kind, self.subject)


@dataclass(slots=True)
class QueueEntry:
    """What waits for a reviewer: one per category or item, however often it was seen."""

    id: str
    kind: str
    subject: str
    count: int
    first_seen: float
    last_seen: float
    examples: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # reports only: how many for each reason, never who
    title: str | None = None

    @classmethod
    def first(cls, seen: Sighting) -> QueueEntry:
        entry = cls(seen.entry, seen.kind, seen.subject, 0, seen.at, seen.at)
        entry.add(seen)
        return entry

    def add(self, seen: Sighting) -> None:
        self.count += 1
        self.first_seen = min(self.first_seen, seen.at)
        self.last_seen = max(self.last_seen, seen.at)
        if seen.item is not None and seen.item not in self.examples and len(self.examples) < MAX_EXAMPLES:
            self.examples.append(seen.item)
        if seen.route is not None and seen.route not in self.routes and len(self.routes) < MAX_ROUTES:
            self.routes.append(seen.route)
        if seen.reason is not None:
            self.reasons[seen.reason] = self.reasons.get(seen.reason, 0) + 1
        if seen.title is not None:
            self.title = seen.title

    def to_json(self) -> dict[str, Any]:
        """The shape of docs/review.md: `category` or `item`, `route` (the first seen) and `routes`."""
        subject = "category" if self.kind == "unknown_category" else "item"
        found: dict[str, Any] = {"id": self.id, "kind": self.kind, subject: self.subject}
        found["route"] = self.routes[0] if self.routes else None
        found["routes"] = list(self.routes)
        found["count"] = self.count
        found["first_seen"] = rfc3339(self.first_seen)
        found["last_seen"] = rfc3339(self.last_seen)
        found["examples"] = list(self.examples)
        if self.kind == "reported_item":
            found["reasons"] = dict(self.reasons)
        if self.title is not None:
            found["title"] = self.title
        return found

    def to_store(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "examples": self.examples,
            "routes": self.routes,
            "reasons": self.reasons,
            "title": self.title,
        }

    @classmethod
    def from_store(cls, data: Mapping[str, Any]) -> QueueEntry:
        # Redis's Lua JSON writes an empty list as {}: both read as empty.
        return cls(
            str(data["id"]),
            str(data["kind"]),
            str(data["subject"]),
            int(data["count"]),
            float(data["first_seen"]),
            float(data["last_seen"]),
            [str(e) for e in data.get("examples") or []],
            [str(r) for r in data.get("routes") or []],
            {str(k): int(v) for k, v in (data.get("reasons") or {}).items()},
            data.get("title") if isinstance(data.get("title"), str) else None,
        )


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """What a reviewer decided about one entry, and why: kept in the overlay while in force, and in the
    audit for ever. `details` says what it changes: `alias_of`, or `sensitive` and `label` for a new
    category; the category or item it is about."""

    at: float
    reviewer: str
    entry: str
    kind: str
    subject: str
    decision: str  # label | block | dismiss
    note: str
    alias_of: str | None = None
    sensitive: bool | None = None
    label: Mapping[str, str] | None = None

    def details(self) -> dict[str, Any]:
        found: dict[str, Any] = {"category" if self.kind == "unknown_category" else "item": self.subject}
        if self.alias_of is not None:
            found["alias_of"] = self.alias_of
        if self.sensitive is not None:
            found["sensitive"] = self.sensitive
        if self.label is not None:
            found["label"] = dict(self.label)
        return found

    def to_json(self) -> dict[str, Any]:
        """The audit entry: `{at, reviewer, entry, kind, decision, note, details}`."""
        return {
            "at": rfc3339(self.at),
            "reviewer": self.reviewer,
            "entry": self.entry,
            "kind": self.kind,
            "decision": self.decision,
            "note": self.note,
            "details": self.details(),
        }

    def to_store(self) -> dict[str, Any]:
        return {**self.to_json(), "at": self.at, "subject": self.subject}

    @classmethod
    def from_store(cls, data: Mapping[str, Any]) -> ReviewDecision:
        details = data.get("details") or {}
        label = details.get("label")
        return cls(
            float(data["at"]),
            str(data["reviewer"]),
            str(data["entry"]),
            str(data["kind"]),
            str(data["subject"]),
            str(data["decision"]),
            str(data["note"]),
            details.get("alias_of"),
            details.get("sensitive"),
            {str(k): str(v) for k, v in label.items()} if isinstance(label, Mapping) else None,
        )


class Overlay:
    """The reviewers' decisions in force, one for each entry (of several given for one entry, the last):
    aliases and new categories for unknown ones, blocked items. Immutable once made; a new decision makes
    a new overlay."""

    __slots__ = ("aliases", "blocked", "categories", "decisions")

    def __init__(self, decisions: Iterable[ReviewDecision] = ()) -> None:
        # The order given, not the times: replicas' clocks may disagree, the store's order does not.
        latest: dict[str, ReviewDecision] = {}
        for decision in decisions:
            latest[decision.entry] = decision
        self.decisions: Mapping[str, ReviewDecision] = latest
        self.aliases: dict[str, ReviewDecision] = {}
        self.categories: dict[str, ReviewDecision] = {}
        self.blocked: dict[str, ReviewDecision] = {}
        for decision in latest.values():
            if decision.decision == "label" and decision.alias_of is not None:
                self.aliases[decision.subject] = decision
            elif decision.decision == "label":
                self.categories[decision.subject] = decision
            elif decision.decision == "block":
                self.blocked[decision.subject] = decision

    def __bool__(self) -> bool:
        return bool(self.aliases or self.categories or self.blocked)

    def fragment(self) -> dict[str, Any]:
        """The decisions as a policy fragment a team can merge into its policy file."""
        found: dict[str, Any] = {}
        if self.categories:
            found["categories"] = {
                name: {"sensitive": bool(d.sensitive), "label": dict(d.label or {})}
                for name, d in sorted(self.categories.items())
            }
        if self.aliases:
            found["category_aliases"] = {name: d.alias_of for name, d in sorted(self.aliases.items())}
        if self.blocked:
            found["blocked_items"] = sorted(self.blocked)
        return found

    def decided(self, kind: str, subject: str) -> ReviewDecision | None:
        return self.decisions.get(entry_id(kind, subject))


EMPTY_OVERLAY = Overlay()
