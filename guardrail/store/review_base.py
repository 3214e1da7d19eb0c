"""The review queue's protocol (docs/review.md): what every store keeps for human review, beside the
users' state. A store hands its queue out with `Store.review_queue()`.

Sightings are taken without waiting (`note`, `note_report`): they come from guarded responses, and are
written in batches off the request path. Decisions are written at once, to the overlay (the decisions in
force, one per entry) and to the audit (every decision, oldest first, never rewritten), and every
replica's overlay follows within the same time as a user's change."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from guardrail.review import TITLE_CHARS, Overlay, QueueEntry, ReviewDecision, Sighting
from guardrail.state import REPORT_REASONS

OverlayListener = Callable[[Overlay], None]


@runtime_checkable
class ReviewQueue(Protocol):
    # The most entries kept; beyond it the oldest of those seen least often are dropped and counted.
    max_entries: int

    def note(self, seen: Sighting) -> None:
        """Queue a sighting for the review queue. Never blocks and never raises."""

    def note_report(self, route: str | None, item_id: str, reason: str, title: str | None = None) -> None:
        """A user reported an item (`POST /v1/reports`): counted by reason, never by who reported it."""

    async def entries(self) -> Sequence[QueueEntry]:
        """The entries waiting for a reviewer, the oldest first. Raises StoreError."""

    async def entry(self, entry_id: str) -> QueueEntry | None:
        """One waiting entry, or None."""

    async def decide(self, decision: ReviewDecision) -> None:
        """Put a decision in force (replacing the entry's earlier one), take its entry out of the queue,
        and add it to the audit. Raises StoreError."""

    async def audit(self) -> Sequence[ReviewDecision]:
        """Every decision ever made, the oldest first."""

    async def dropped(self) -> int:
        """How many entries were dropped to keep the queue within `max_entries`."""

    @property
    def overlay(self) -> Overlay:
        """The decisions in force as this replica last heard them (no I/O)."""

    async def refresh(self) -> Overlay:
        """Read the decisions in force from the store now."""

    def on_change(self, listener: OverlayListener) -> None:
        """Call `listener` with the new overlay whenever a decision (on any replica) changes it."""

    async def flush(self) -> None:
        """Write the queued sightings now."""


def report_sighting(route: str | None, item_id: str, reason: str, title: str | None, at: float) -> Sighting:
    """A report as the queue keeps it: a reason outside the closed set counts as `other` (the set bounds what
    an entry can hold), a title at most TITLE_CHARS characters."""
    known = reason if reason in REPORT_REASONS else "other"
    return Sighting("reported_item", item_id, route, item_id, at, known, title[:TITLE_CHARS] if title else None)


def still_wanted(seen: Sighting, decided: ReviewDecision | None) -> bool:
    """Whether a sighting of something already decided goes back to the queue: only a new report of an
    item whose earlier reports were dismissed (new reports are new information); a decided category or
    item stays decided until a reviewer decides again."""
    return decided is None or (seen.kind == "reported_item" and decided.decision == "dismiss")
