"""The runtime: what lives as long as the middleware, whichever policy is live (docs/architecture.md §7).

One `Runtime` is built per middleware and handed to what needs it: the store, the metrics (with the
tally that batches the hot path's counts), decision ids and the readiness checks. A reloaded policy
swaps the guard and the management app; the runtime stays.

It takes plain values (a route template, a decision id, counts, a decision record) from the
responder and the management surface, so it depends on neither: it sits below both.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from guardrail.engine import CheckedItems
from guardrail.errors import StoreError
from guardrail.logs import log_key, user_hash
from guardrail.metrics import Metrics
from guardrail.review import Sighting
from guardrail.sampling import Sampler
from guardrail.store import DecisionRecord, Store, create_store

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    from guardrail.tracing import Tracing

logger = logging.getLogger("guardrail")

# What /readyz awaits besides the store: None when ready, else a short reason shown to anyone who asks.
ReadinessCheck = Callable[[], Awaitable[str | None]]


class Runtime:
    """The store, the metrics, decision ids and readiness, built once per middleware.

    `store` is a store object, or a URL for which a store is made here, counting into `metrics`
    (`decisions_per_user`, `retention` and `timeout` are then its settings). `accelerated`: whether
    the per-item loop runs in C, for `guardrail_build_info`; `tracing`: the spans to make, None when
    not tracing (`guardrail.tracing`), given to a store made here."""

    def __init__(
        self,
        store: Store | str,
        metrics: Metrics,
        *,
        accelerated: bool,
        decisions_per_user: int = 50,
        retention: timedelta = timedelta(days=7),
        timeout: float = 0.02,
        tracing: Tracing | None = None,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        metrics.set_build_info(accelerated)
        self.store: Store = (
            create_store(
                store,
                metrics=metrics,
                decisions_per_user=decisions_per_user,
                retention=retention,
                timeout=timeout,
                tracing=tracing,
            )
            if isinstance(store, str)
            else store
        )
        self.tally = metrics.tally
        self._log_key = log_key()  # read once: the hash is taken on every logged request
        self._overhead: Histogram = metrics.overhead
        # Labelled counters, looked up once: `labels()` takes a lock and builds a key each time.
        self._children: dict[tuple[str, str, str | None], Counter] = {}
        self._ids = itertools.count(1)
        # Unique across replicas and restarts without coordination; sequential within a process.
        self._id_prefix = secrets.token_hex(5)
        # What /readyz checks besides the store, by name.
        self.readiness_checks: dict[str, ReadinessCheck] = {}
        # Takes some guarded responses off the response path: a candidate policy, recorded cases.
        self.sampler: Sampler | None = None

    # -- start and close ----------------------------------------------------------------------

    async def start(self) -> bool:
        """Connect to the store before the first request (True if it answered): a process that starts
        would otherwise spend its first requests' budget opening a connection, and answer degraded.

        A store that does not answer is logged and does not stop the start: requests follow the
        policy's `fail_mode` and `/readyz` says unavailable until it answers (docs/operations.md)."""
        try:
            await self.store.check()
            await self.store.review_queue().refresh()  # the reviewers' decisions, before the first request
        except StoreError as exc:
            logger.warning(
                "the store does not answer at startup (%s); /readyz says unavailable until it does",
                exc,
                extra={"store_error": str(exc)},
            )
            return False
        return True

    async def close(self) -> None:
        """Work on the sampled responses still queued, write the queued decision records, close the
        store, and publish the batched counts."""
        if self.sampler is not None:
            self.sampler.close()
        await self.store.aclose()
        self.tally.flush()

    # -- ids and readiness --------------------------------------------------------------------

    def next_decision_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """Make `/readyz` also depend on `check` (an async callable: None when ready, else a short
        reason, shown to anyone who asks, so nothing internal), reported under `name`."""
        self.readiness_checks[name] = check

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """(ready, what each check said: "ok" or "error: ..."), the store first."""
        ready = True
        report: dict[str, str] = {"store": "ok"}
        try:
            await self.store.check()
        except StoreError as exc:
            report["store"] = f"error: {exc}"
            ready = False
        for name, check in self.readiness_checks.items():
            problem = await check()
            if problem is not None:
                report[name] = f"error: {problem}"
                ready = False
            else:
                report[name] = "ok"
        return ready, report

    # -- counts -------------------------------------------------------------------------------

    def _count(self, route: str, metric: str, label: str | None = None) -> Counter:
        key = (route, metric, label)
        child = self._children.get(key)
        if child is None:
            family = getattr(self.metrics, metric)
            child = self._children[key] = family.labels(route) if label is None else family.labels(route, label)
        return child

    def count_tc_string(self, result: str) -> None:
        self.metrics.tc_strings.labels(result).inc()

    def count_fail_mode(self, mode: str) -> None:
        self.metrics.fail_mode.labels(mode).inc()

    def count_upstream_body(self, kind: str) -> None:
        self.metrics.upstream_bodies.labels(kind).inc()

    # -- what a guarded request reports -------------------------------------------------------

    def after_decision(self, route: str, checked: CheckedItems, record: DecisionRecord | None) -> None:
        """Count a checked body's items on `route` (a template), and keep its record, if any."""
        add = self.tally.add
        hidden = checked.hidden
        kept = len(checked.kept) - checked.discreet
        for action, count in (("keep", kept), ("discreet", checked.discreet), ("hide", len(hidden))):
            if count:
                add(self._count(route, "items", action), count)
        # A handful of kinds, counted by the per-item loop; one reason may come with several muted topics.
        for (reason, _), count in checked.hidden_by_kind.items():
            add(self._count(route, "hidden_items", reason), count)
        if checked.unknown:
            add(self._count(route, "unknown_categories"), checked.unknown)
        if record is not None:
            self.store.record(record)

    def note_for_review(self, sightings: list[Sighting]) -> None:
        """Offer what a page showed to the human review queue (written in batches, off the request path)."""
        if sightings:
            note = self.store.review_queue().note
            for seen in sightings:
                note(seen)

    def request_done(
        self,
        route: str,
        outcome: str,
        *,
        hidden: int,
        decision: str,
        user: str | None,
        started: float,
        overhead: float,
    ) -> None:
        """Count a guarded request and the time the guardrail added to it; log its line."""
        tally = self.tally
        tally.add(self._count(route, "requests", outcome))
        tally.observe(self._overhead, overhead)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "guarded request",
                extra={
                    "route": route,
                    "outcome": outcome,
                    "hidden": hidden,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "overhead_ms": round(overhead * 1000, 3),
                    "decision": decision,
                    "user": user_hash(user, self._log_key) if user is not None else None,
                },
            )

    def log_unchecked(self, route: str, decision: str, kind: str, detail: str, outcome: str) -> None:
        logger.warning(
            "upstream body on %s not checked (%s: %s); %s",
            route,
            kind,
            detail,
            outcome,
            extra={"decision": decision, "route": route},
        )
