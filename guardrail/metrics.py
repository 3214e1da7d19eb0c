"""Prometheus metrics (docs/architecture.md §8). Labels come from bounded sets only: route templates from the
policy, actions and reasons from enums, never a user id, raw path or header value."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from guardrail._version import __version__
from guardrail.state import REPORT_REASONS

# From 25 µs (an empty evaluation) to 100 ms (far past the budget): the default buckets start at 5 ms.
OVERHEAD_BUCKETS = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
UPSTREAM_ERROR_KINDS = ("connect", "tls", "timeout", "protocol", "interrupted")
# The upstream's own time, from a fast local service (1 ms) to past the default 30 s timeout.
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# `status_class` of the sidecar's proxied requests: the status's first digit, or `error` for no answer.
NO_ANSWER = "error"
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", NO_ANSWER)
# `route` of a proxied request that no policy route guards.
OTHER_ROUTE = "other"
# With several worker processes a scrape reaches one of them, which reads every worker's counts from
# files: the others' batched counts must reach those files soon, so they are added every 0.1 s.
MULTIPROCESS_TALLY_DELAY = 0.1


def multiprocess_mode() -> bool:
    """Whether prometheus_client keeps values in files shared by worker processes (read at import)."""
    from prometheus_client import values

    return getattr(values.ValueClass, "_multiprocess", False) is True


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # First on the registry, so that a scrape adds the batched counts before it reads any counter.
        self.multiprocess = multiprocess_mode()
        self.tally = Tally(registry, delay=MULTIPROCESS_TALLY_DELAY if self.multiprocess else 1.0)
        self.requests = Counter(
            "guardrail_requests",
            "Guarded requests by outcome.",
            ["route", "outcome"],
            registry=registry,
        )
        self.items = Counter(
            "guardrail_items",
            "Recommended items by action.",
            ["route", "action"],
            registry=registry,
        )
        self.hidden_items = Counter(
            "guardrail_hidden_items",
            "Hidden items by the reason that decided.",
            ["route", "reason"],
            registry=registry,
        )
        self.unknown_categories = Counter(
            "guardrail_unknown_categories",
            "Items with a category the policy does not define, whatever unknown_categories then decided.",
            ["route"],
            registry=registry,
        )
        self.overhead = Histogram(
            "guardrail_overhead_seconds",
            "Time the guardrail adds to a guarded request (the upstream's own time excluded).",
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.store_seconds = Histogram(
            "guardrail_store_seconds",
            "Store call latency.",
            ["op"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "guardrail_store_errors",
            "Store calls that failed or timed out.",
            ["op"],
            registry=registry,
        )
        self.fail_mode = Counter(
            "guardrail_fail_mode", "Responses decided by a fail mode.", ["mode"], registry=registry
        )
        self.cache_lookups = Counter(
            "guardrail_cache_lookups", "User state cache lookups.", ["result"], registry=registry
        )
        self.policy_info = Gauge(
            "guardrail_policy_info", "The live policy (value 1).", ["policy"], registry=registry,
            multiprocess_mode="liveall",
        )  # fmt: skip
        self.policy_reloads = Counter(
            "guardrail_policy_reloads", "Policy reloads by result.", ["result"], registry=registry
        )
        self.control_changes = Counter(
            "guardrail_control_changes",
            "Changes users made to their controls, by field.",
            ["field"],
            registry=registry,
        )
        self.decision_records_dropped = Counter(
            "guardrail_decision_records_dropped",
            "Decision records that could not be kept.",
            registry=registry,
        )
        self.tc_strings = Counter(
            "guardrail_tc_strings",
            "TC strings seen on requests, by what the TCF rules made of them.",
            ["result"],
            registry=registry,
        )
        self.upstream_bodies = Counter(
            "guardrail_upstream_bodies",
            "Upstream bodies on guarded routes that were not checked, by why.",
            ["kind"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "guardrail_upstream_errors",
            "Requests the sidecar could not get answered by the upstream, by why.",
            ["kind"],
            registry=registry,
        )
        self.upstream_requests = Counter(
            "guardrail_upstream_requests",
            "Requests the sidecar proxied, by policy route (or other) and the upstream's status class (error: none).",
            ["route", "status_class"],
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            "guardrail_upstream_seconds",
            "Time the upstream took to answer the sidecar (to the status line and headers), or to fail, by route.",
            ["route"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.build_info = Gauge(
            "guardrail_build_info",
            "This build (value 1): its version, and whether the per-item loop runs in C (accelerated) or Python.",
            ["version", "accelerated"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        # A candidate policy on live traffic (guardrail.candidate), and the queue it shares with recording.
        self.candidate_changes = Counter(
            "guardrail_candidate_changes",
            "Items the candidate policy decides otherwise than the live one, by both actions (sampled requests).",
            ["route", "live", "candidate"],
            registry=registry,
        )
        self.candidate_items = Counter(
            "guardrail_candidate_items",
            "Items the candidate policy decided (sampled requests).",
            ["route"],
            registry=registry,
        )
        self.candidate_dropped = Counter(
            "guardrail_candidate_dropped",
            "Sampled requests dropped, not queued for the candidate or the case recording: the queue was full.",
            registry=registry,
        )
        self.reports = Counter(
            "guardrail_reports",
            "Items users reported from their suggestions, by the reason they gave.",
            ["reason"],
            registry=registry,
        )
        self._live_policy: str | None = None
        # The human review queue's gauges, read from the store's queue when scraped.
        self.review_queue = ReviewQueueGauges()
        registry.register(self.review_queue)

        # Series that alerts watch with increase() exist from the start, at 0: a counter that appears
        # only with its first event hides that event from increase().
        for result in ("success", "error"):
            self.policy_reloads.labels(result)
        for mode in ("closed", "open"):
            self.fail_mode.labels(mode)
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(kind)
        for reason in REPORT_REASONS:
            self.reports.labels(reason)

    def watch_review_queue(self, counts: Callable[[], dict[str, int]], oldest: Callable[[], float | None]) -> None:
        """Report the review queue's entries by kind, and how long its oldest entry has waited (its
        store's queue says, without I/O; the last one given wins)."""
        self.review_queue.counts, self.review_queue.oldest = counts, oldest

    def set_build_info(self, accelerated: bool) -> None:
        """Say which per-item loop runs: whoever runs the engine knows, the metrics do not import it."""
        self.build_info.labels(__version__, "true" if accelerated else "false").set(1)

    def set_policy(self, policy_id: str) -> None:
        previous, self._live_policy = self._live_policy, policy_id
        if previous is not None and previous != policy_id:
            if self.multiprocess:
                # Series cannot be removed from the shared files: the replaced policy reads 0 until
                # this process exits (dashboards select `guardrail_policy_info == 1`).
                self.policy_info.labels(policy=previous).set(0)
            else:
                self.policy_info.remove(previous)
        self.policy_info.labels(policy=policy_id).set(1)


class Tally:
    """Counts of the hot path, kept as plain integers and added to their Prometheus counters in
    batches: a labelled `Counter.inc` takes a lock and costs about 1 µs, and a guarded response
    would make five of them. A batch is added within a second, and always before a scrape."""

    def __init__(self, registry: CollectorRegistry, delay: float = 1.0) -> None:
        self.counts: dict[Any, float] = {}
        # Histogram observations wait too: an observe() takes two locked increments and a bucket
        # search, about 2 µs; a batch costs one increment per bucket it touches.
        self.observations: dict[Histogram, list[float]] = {}
        self.delay = delay
        self._scheduled = False
        self.flush_before_collecting(registry)

    def add(self, child: Any, amount: float = 1) -> None:
        counts = self.counts
        counts[child] = counts.get(child, 0) + amount
        if not self._scheduled:
            self._schedule()

    def observe(self, histogram: Histogram, amount: float) -> None:
        pending = self.observations.get(histogram)
        if pending is None:
            pending = self.observations[histogram] = []
        pending.append(amount)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            asyncio.get_running_loop().call_later(self.delay, self.flush)
        except RuntimeError:  # no event loop (a synchronous caller): add the counts now
            self.flush()
            return
        self._scheduled = True

    def flush(self) -> None:
        self._scheduled = False
        counts, self.counts = self.counts, {}
        for child, amount in counts.items():
            child.inc(amount)
        observations, self.observations = self.observations, {}
        for histogram, values in observations.items():
            _observe_all(histogram, values)

    def flush_before_collecting(self, registry: CollectorRegistry) -> None:
        """Add the batched counts whenever `registry` is scraped (register before its other collectors)."""
        registry.register(_FlushOnCollect(self))


def _observe_all(histogram: Histogram, values: list[float]) -> None:
    """`histogram.observe(v)` for every value, as one increment per bucket touched."""
    try:  # prometheus_client's own fields (stable since 0.4); if they move, observe one by one
        bounds: list[float] = histogram._upper_bounds
        buckets: list[Any] = histogram._buckets
        total: Any = histogram._sum
    except AttributeError:
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bucket whose bound is >= value, as observe()
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
    total.inc(sum(values))


class _FlushOnCollect(Collector):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def collect(self) -> Iterable[Metric]:
        self.tally.flush()
        return ()

    def describe(self) -> Iterable[Metric]:
        return ()


_SHARED: WeakKeyDictionary[CollectorRegistry, Metrics] = WeakKeyDictionary()


def metrics_for(registry: CollectorRegistry | None = None) -> Metrics:
    """The metrics on a registry, created once: two middlewares on one registry share them."""
    registry = registry if registry is not None else REGISTRY
    found = _SHARED.get(registry)
    if found is None:
        found = _SHARED[registry] = Metrics(registry)
    return found


def multiprocess_registry(metrics: Metrics) -> CollectorRegistry:
    """The registry to scrape when worker processes share their values through files
    (`PROMETHEUS_MULTIPROC_DIR`): every worker's counts, summed. This process's batched counts are
    added first; the other workers add theirs every `MULTIPROCESS_TALLY_DELAY` seconds."""
    registry = CollectorRegistry()
    metrics.tally.flush_before_collecting(registry)
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    # The review queue is the store's, the same seen from any worker: the one scraped reports it.
    registry.register(metrics.review_queue)
    return registry


REVIEW_KINDS = ("unknown_category", "reported_item", "flagged_item")


class ReviewQueueGauges(Collector):
    """`guardrail_review_queue_entries{kind}` and `guardrail_review_oldest_seconds`, read at scrape time,
    so the oldest entry's wait is current whenever it is read."""

    def __init__(self) -> None:
        self.counts: Callable[[], dict[str, int]] = dict
        self.oldest: Callable[[], float | None] = lambda: None

    def collect(self) -> Iterable[Metric]:
        entries = GaugeMetricFamily(
            "guardrail_review_queue_entries", "Entries waiting in the human review queue, by kind.", labels=["kind"]
        )
        counts = self.counts()
        for kind in REVIEW_KINDS:
            entries.add_metric([kind], counts.get(kind, 0))
        oldest = self.oldest()
        waited = GaugeMetricFamily(
            "guardrail_review_oldest_seconds",
            "How long the oldest entry of the review queue has waited (0 when it is empty).",
            value=max(0.0, time.time() - oldest) if oldest is not None else 0.0,
        )
        return [entries, waited]

    def describe(self) -> Iterable[Metric]:
        return self.collect()
