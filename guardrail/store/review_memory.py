"""The review queue of the embedded store: one process, nothing survives a restart."""

from __future__ import annotations

import time
from collections.abc import Sequence

from guardrail.metrics import Metrics
from guardrail.review import Overlay, QueueEntry, ReviewDecision, Sighting
from guardrail.store.review_base import OverlayListener, report_sighting, still_wanted

DEFAULT_MAX_ENTRIES = 1000


class MemoryReviewQueue:
    def __init__(self, metrics: Metrics | None = None, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.metrics = metrics
        # In the order first seen: the first is the one waiting longest.
        self._entries: dict[str, QueueEntry] = {}
        self._audit: list[ReviewDecision] = []
        self._overlay = Overlay()
        self._listeners: list[OverlayListener] = []
        self._dropped = 0
        if metrics is not None:
            metrics.watch_review_queue(self._counts, self._oldest)

    def note(self, seen: Sighting) -> None:
        key = seen.entry
        if not still_wanted(seen, self._overlay.decisions.get(key)):
            return
        found = self._entries.get(key)
        if found is not None:
            found.add(seen)
            return
        if len(self._entries) >= self.max_entries:
            victim = min(self._entries.values(), key=lambda e: (e.count, e.last_seen))
            del self._entries[victim.id]
            self._dropped += 1
        self._entries[key] = QueueEntry.first(seen)

    def note_report(self, route: str | None, item_id: str, reason: str, title: str | None = None) -> None:
        self.note(report_sighting(route, item_id, reason, title, time.time()))

    async def entries(self) -> Sequence[QueueEntry]:
        return sorted(self._entries.values(), key=lambda e: e.first_seen)

    async def entry(self, entry_id: str) -> QueueEntry | None:
        return self._entries.get(entry_id)

    async def decide(self, decision: ReviewDecision) -> None:
        self._entries.pop(decision.entry, None)
        self._audit.append(decision)
        self._overlay = Overlay([*self._overlay.decisions.values(), decision])
        for listener in list(self._listeners):
            listener(self._overlay)

    async def audit(self) -> Sequence[ReviewDecision]:
        return list(self._audit)

    async def dropped(self) -> int:
        return self._dropped

    @property
    def overlay(self) -> Overlay:
        return self._overlay

    async def refresh(self) -> Overlay:
        return self._overlay

    def on_change(self, listener: OverlayListener) -> None:
        self._listeners.append(listener)

    async def flush(self) -> None:
        return None

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self._entries.values():
            counts[entry.kind] = counts.get(entry.kind, 0) + 1
        return counts

    def _oldest(self) -> float | None:
        return min((e.first_seen for e in self._entries.values()), default=None)
