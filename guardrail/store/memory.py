"""The embedded store: one process, no persistence. For demos, tests and single-replica use."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from guardrail.errors import StaleRevision
from guardrail.metrics import Metrics
from guardrail.state import REPORTS_PER_USER, ControlsPatch, Report, UserState
from guardrail.store.base import DecisionRecord
from guardrail.store.codec import decode_record, encode_record
from guardrail.store.review_memory import MemoryReviewQueue

if TYPE_CHECKING:
    from limits.aio.storage import Storage

# A kept record: (created_at, id, the record as bytes). Bytes and a tuple of atomic values are
# invisible to Python's cycle collector; 50 records for each of 1,000 users kept as objects made
# every full collection walk 5 million references (167 ms on the benchmark VM, a p99 spike).
_Kept = tuple[float, str, bytes]


class MemoryStore:
    def __init__(
        self,
        *,
        decisions_per_user: int = 50,
        retention: timedelta = timedelta(days=7),
        max_users_with_decisions: int = 100_000,
        metrics: Metrics | None = None,
    ) -> None:
        # Taken like every backend's, but nothing is counted: memory neither fails nor drops.
        self.metrics = metrics
        self._states: dict[str, UserState] = {}
        self._decisions: OrderedDict[str, deque[_Kept]] = OrderedDict()
        # When each user last erased their data, oldest first: a record made before that and handed
        # over after it (its request was still being answered) is not kept. Forgotten after the
        # retention, when such a record would not be shown anyway.
        self._erased: OrderedDict[str, float] = OrderedDict()
        self._per_user = decisions_per_user
        self._retention = retention
        self._max_users = max_users_with_decisions
        self._review = MemoryReviewQueue(metrics)
        # Each user's reports by key (Report.key), oldest first.
        self._reports: dict[str, OrderedDict[str, Report]] = {}

    async def load(self, user: str) -> UserState | None:
        return self._states.get(user)

    async def patch(self, user: str, patch: ControlsPatch, *, if_match: int | None, now: datetime) -> UserState:
        # No await between the read and the write: on one event loop this is atomic.
        current = self._states.get(user, UserState())
        if if_match is not None and if_match != current.revision:
            raise StaleRevision(current.revision)
        state = patch.apply(current, now)
        self._states[user] = state
        return state

    async def erase(self, user: str) -> None:
        self._states.pop(user, None)
        self._decisions.pop(user, None)
        self._reports.pop(user, None)
        now = time.time()
        self._erased[user] = now
        self._erased.move_to_end(user)
        oldest = now - self._retention.total_seconds()
        while next(iter(self._erased.values())) < oldest:
            self._erased.popitem(last=False)

    def record(self, record: DecisionRecord) -> None:
        erased = self._erased.get(record.user)
        if erased is not None and record.created_at <= erased:
            return
        records = self._decisions.get(record.user)
        if records is None:
            if len(self._decisions) >= self._max_users:
                self._decisions.popitem(last=False)  # the least recently served user
            records = self._decisions[record.user] = deque(maxlen=self._per_user)
        else:
            self._decisions.move_to_end(record.user)
        records.append((record.created_at, record.id, encode_record(record)))

    async def decisions(self, user: str, *, limit: int = 50) -> Sequence[DecisionRecord]:
        oldest = time.time() - self._retention.total_seconds()
        fresh = [raw for created_at, _, raw in reversed(self._decisions.get(user, ())) if created_at >= oldest]
        return [decode_record(user, raw) for raw in fresh[:limit]]

    async def decision(self, user: str, decision_id: str) -> DecisionRecord | None:
        oldest = time.time() - self._retention.total_seconds()
        for created_at, found, raw in self._decisions.get(user, ()):
            if found == decision_id and created_at >= oldest:
                return decode_record(user, raw)
        return None

    async def add_report(self, user: str, report: Report) -> Report | None:
        kept = self._reports.setdefault(user, OrderedDict())
        if report.key in kept:
            return None
        kept[report.key] = report
        if len(kept) > REPORTS_PER_USER:
            kept.popitem(last=False)
        return report

    async def reports(self, user: str) -> Sequence[Report]:
        oldest = time.time() - self._retention.total_seconds()
        return [r for r in reversed(self._reports.get(user, {}).values()) if r.created_at >= oldest]

    def last_known(self, user: str) -> UserState | None:
        return self._states.get(user)

    def rate_limit_storage(self) -> Storage | None:
        return None  # one process: the rate limiter counts in memory too

    def review_queue(self) -> MemoryReviewQueue:
        return self._review

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
