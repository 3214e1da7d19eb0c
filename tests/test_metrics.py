"""Batched metrics: what a scrape shows is what one observe()/inc() per event would have shown; build info."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from guardrail import GuardrailMiddleware, __version__
from guardrail.metrics import OVERHEAD_BUCKETS, Tally
from guardrail.speedups import ACCELERATED
from tests.conftest import make_policy
from tests.upstream import Upstream


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_batched_observations_fill_the_same_buckets_as_observe() -> None:
    # Below, on and above bucket bounds, and past the last one (+Inf).
    values = [0.0, 1e-6, *OVERHEAD_BUCKETS, *(b * 1.5 for b in OVERHEAD_BUCKETS), 10.0, 0.000_25, 0.000_25]
    direct, batched = CollectorRegistry(), CollectorRegistry()
    one_by_one = Histogram("h_seconds", "h", buckets=OVERHEAD_BUCKETS, registry=direct)
    tally = Tally(batched)  # no event loop here: it adds at once, as a scrape would make it
    histogram = Histogram("h_seconds", "h", buckets=OVERHEAD_BUCKETS, registry=batched)
    for value in values:
        one_by_one.observe(value)
    tally.observations[histogram] = list(values)  # what observe() queues under a running loop
    tally.flush()
    assert samples(batched) == samples(direct)
    assert batched.get_sample_value("h_seconds_count") == len(values)


async def test_a_scrape_sees_observations_still_waiting() -> None:
    registry = CollectorRegistry()
    tally = Tally(registry)  # registered first: it adds before the histogram is read
    histogram = Histogram("h_seconds", "h", buckets=OVERHEAD_BUCKETS, registry=registry)
    tally.observe(histogram, 0.000_3)  # under a running loop: queued for a second
    assert histogram._sum.get() == 0
    assert registry.get_sample_value("h_seconds_count") == 1
    assert registry.get_sample_value("h_seconds_sum") == 0.000_3


def test_build_info_names_the_version_and_which_loop_runs() -> None:
    registry = CollectorRegistry()
    GuardrailMiddleware(Upstream(), policy=make_policy(), registry=registry)  # the runtime says which loop runs
    accelerated = "true" if ACCELERATED else "false"
    assert registry.get_sample_value("guardrail_build_info", {"version": __version__, "accelerated": accelerated}) == 1
    other = {"version": __version__, "accelerated": "false" if ACCELERATED else "true"}
    assert registry.get_sample_value("guardrail_build_info", other) is None
