"""The human review queue's figures (docs/review.md): memory per entry, and how fast a decision reaches
another replica.

    python benchmarks/review_queue.py [--entries 1000] [--decisions 200]

- Memory per entry: `--entries` full entries (5 example ids, 3 routes, a title, report reasons) in the memory
  store's queue, measured with tracemalloc; and the same in a Redis of our own, from `INFO memory`.
- Propagation: two stores on one Redis, as two replicas; a decision made on one, timed until the other's
  overlay listener has it (what rebuilds that replica's guard). `--decisions` of them, one after another.

The report goes to benchmarks/results/review_queue.md. The Redis server is started here on a free port (never
the one on 6379) and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for tests.store.redis_servers (after site-packages: an installed guardrail wins)

from apps import POLICY_PATH, make_bare  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from guardrail import GuardrailMiddleware  # noqa: E402
from guardrail.review import ReviewDecision, Sighting  # noqa: E402
from guardrail.store import create_store  # noqa: E402
from guardrail.store.redis import RedisStore  # noqa: E402
from tests.store.redis_servers import RedisServer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def sightings(entries: int) -> list[Sighting]:
    now = time.time()
    found = []
    for index in range(entries):
        subject = f"item-{index:08d}"
        for copy in range(5):
            found.append(
                Sighting(
                    "reported_item",
                    subject,
                    f"/route-{copy % 3}",
                    subject if copy == 0 else f"{subject}-{copy}",
                    now,
                    ("offensive", "wrong_topic")[copy % 2],
                    "A title of about forty characters, say it",
                )
            )
    return found


async def memory_store_bytes(entries: int) -> float:
    store = create_store("memory://")
    queue = store.review_queue()
    queue.max_entries = entries
    seen = sightings(entries)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for sighting in seen:
        queue.note(sighting)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(await queue.entries()) == entries
    return grown / entries


async def redis_bytes(url: str, entries: int) -> float:
    store = create_store(url, timeout=5.0)
    assert isinstance(store, RedisStore)
    try:
        before = int((await store.client.info("memory"))["used_memory"])
        queue = store.review_queue()
        queue.max_entries = entries
        for sighting in sightings(entries):
            queue.note(sighting)
        while True:
            await queue.flush()
            if len(await queue.entries()) >= entries:
                break
        after = int((await store.client.info("memory"))["used_memory"])
        return (after - before) / entries
    finally:
        await store.aclose()


async def propagation(url: str, decisions: int) -> list[float]:
    one, two = create_store(url, timeout=5.0), create_store(url, timeout=5.0)
    assert isinstance(two, RedisStore)
    timings: list[float] = []
    try:
        # A replica on `two`: its middleware listens first and serves the policy again with each decision.
        GuardrailMiddleware(make_bare(50), policy=POLICY_PATH, store=two, registry=CollectorRegistry())
        await two.review_queue().refresh()
        await asyncio.wait_for(two.subscribed.wait(), 5.0)
        heard: asyncio.Queue[float] = asyncio.Queue()
        two.review_queue().on_change(lambda _: heard.put_nowait(time.perf_counter()))
        for index in range(decisions):
            decision = ReviewDecision(time.time(), "bench", f"e{index}", "reported_item", f"i{index}", "block", "n")
            started = time.perf_counter()
            await one.review_queue().decide(decision)
            timings.append(await asyncio.wait_for(heard.get(), 5.0) - started)
    finally:
        await one.aclose()
        await two.aclose()
    return timings


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main(entries: int, decisions: int) -> str:
    in_memory = await memory_store_bytes(entries)
    with RedisServer() as server:
        in_redis = await redis_bytes(server.url, entries)
    with RedisServer() as server:
        timings = await propagation(server.url, decisions)
    ms = [t * 1000 for t in timings]
    lines = [
        "# Review queue: memory per entry and propagation",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, `python benchmarks/review_queue.py --entries {entries} --decisions "
        f"{decisions}`, Python {platform.python_version()}, {platform.machine()}.",
        "",
        "An entry here is a reported item with 5 example ids, 3 routes, 2 report reasons and a 41-character title.",
        "",
        "| what | figure |",
        "|---|---|",
        f"| memory store, per entry (tracemalloc) | {in_memory:,.0f} bytes |",
        f"| Redis, per entry (`INFO memory` used_memory) | {in_redis:,.0f} bytes |",
        f"| a decision reaching another replica, median | {statistics.median(ms):.2f} ms |",
        f"| a decision reaching another replica, p99 | {percentile(ms, 0.99):.2f} ms |",
        f"| a decision reaching another replica, max | {max(ms):.2f} ms |",
        "",
        "Propagation: two stores on one local Redis, a middleware (the demo policy) on the second; from the call",
        "that decides on the first until the second serves the policy with the decision (its guard and management",
        "app rebuilt), one decision at a time.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/review_queue.md")
    args = parser.parse_args()
    report = asyncio.run(main(args.entries, args.decisions))
    print(report)
    if args.write:
        (RESULTS / "review_queue.md").write_text(report)
