"""The store protocol (docs/architecture.md §6): a small async interface with one module per backend.

Every type its signatures name is exported from `guardrail.store`. A backend is given what it counts
into (`Metrics`) when it is made, and never reached into: what other parts share with it (the change
rate limiter's counters) it hands out through the protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from guardrail.engine.decisions import ItemDecision
from guardrail.state import ControlsPatch, Report, UserState
from guardrail.store.review_base import ReviewQueue

if TYPE_CHECKING:
    # Imported when first asked for (guardrail.store.__getattr__): `limits` takes longer to import
    # than the rest of `import guardrail`, and only the controls API needs it.
    from limits.aio.storage import Storage as RateLimitStorage

# (item id, action, reason codes, signals relied on): plain tuples, cheap to build per item.
ItemRecord = tuple[str, str, tuple[str, ...], tuple[str, ...]]


@dataclass(slots=True)  # not frozen: made per response, and a frozen init costs several µs
class DecisionRecord:
    """A receipt of one guarded response, kept so the user can ask "why?" later. Never changed once made."""

    id: str
    user: str
    created_at: float  # seconds since the epoch
    route: str
    mode: str
    policy: str
    locale: str
    degraded: bool
    item_ids: Sequence[str | int]
    decisions: Sequence[ItemDecision]
    # The same decisions said once each: the page's distinct ones, and one character per item naming its
    # decision's position among them (guardrail.engine.CheckedItems). A store writes a record this way
    # when it has them; they say nothing `decisions` does not.
    distinct: Sequence[ItemDecision] | None = field(default=None, compare=False, repr=False)
    per_item: str | None = field(default=None, compare=False, repr=False)
    # Each item's title (at most TITLE_CHARS characters; None for an item without one), when the route
    # names a display field (`fields: {title: ...}`); None when it does not.
    titles: Sequence[str | None] | None = None

    def title(self, index: int) -> str | None:
        return self.titles[index] if self.titles is not None else None

    def topics(self, index: int) -> Sequence[str]:
        """The item's categories as the policy spells them (none in records made before they were kept)."""
        return self.decisions[index].categories

    def index_of(self, item_id: str) -> int | None:
        """The position of the item whose id reads `item_id` (ids are compared as text); None if absent."""
        for index, found in enumerate(self.item_ids):
            if str(found) == item_id:
                return index
        return None

    @property
    def items(self) -> tuple[ItemRecord, ...]:
        return tuple(
            (str(item_id), d.action.value, tuple(d.reasons), d.because)
            for item_id, d in zip(self.item_ids, self.decisions, strict=True)
        )


@runtime_checkable
class Store(Protocol):
    async def load(self, user: str) -> UserState | None:
        """The user's state, or None if they never changed anything. Raises StoreError."""

    async def patch(self, user: str, patch: ControlsPatch, *, if_match: int | None, now: datetime) -> UserState:
        """Apply a validated patch atomically; StaleRevision if `if_match` is not the current revision."""

    async def erase(self, user: str) -> None:
        """Forget the user's controls, decision records and reports."""

    def record(self, record: DecisionRecord) -> None:
        """Queue a decision record. Never blocks and never raises: it is off the request path."""

    async def decisions(self, user: str, *, limit: int = 50) -> Sequence[DecisionRecord]:
        """The user's recent decision records, newest first."""

    async def decision(self, user: str, decision_id: str) -> DecisionRecord | None:
        """One of the user's decision records; None if absent or someone else's."""

    async def add_report(self, user: str, report: Report) -> Report | None:
        """Keep a report; None if the user had already reported that item of that decision (the first report
        stays), else `report`. Raises StoreError."""

    async def reports(self, user: str) -> Sequence[Report]:
        """The user's reports, newest first. Raises StoreError."""

    def last_known(self, user: str) -> UserState | None:
        """The last state seen for the user, however old, without I/O: for `fail_mode: open`."""

    def rate_limit_storage(self) -> RateLimitStorage | None:
        """Where the change rate limiter counts, shared by every replica on this store; None: in this
        process. The same object on every call."""

    def review_queue(self) -> ReviewQueue:
        """The human review queue kept beside the users' state (docs/review.md). The same object on every call."""

    async def check(self) -> None:
        """Raise StoreError unless the store answers."""

    async def aclose(self) -> None: ...
