"""The review queue's contract (docs/review.md), once per backend: memory, redis, redis-cluster.

Only the protocol is used. Backends share a server across tests, so each test works on subjects of its own.
"""

from __future__ import annotations

import asyncio
import time
from uuid import uuid4

import pytest

from guardrail.review import QueueEntry, ReviewDecision, Sighting, entry_id
from guardrail.store import Store, create_store
from tests.store.conftest import store_url

WAIT = 5.0  # seconds a batched sighting or a published decision may take to show (a busy CI machine)


def subject() -> str:
    return f"cat-{uuid4().hex[:12]}"


async def settled(store: Store, entry: str) -> QueueEntry:
    """The entry once the queued sightings are written."""
    queue = store.review_queue()
    await queue.flush()
    found = await queue.entry(entry)
    assert found is not None, "the sighting never reached the queue"
    return found


def decision(entry: QueueEntry | Sighting, choice: str, **details: object) -> ReviewDecision:
    return ReviewDecision(
        at=time.time(),
        reviewer="staff-1",
        entry=entry.entry if isinstance(entry, Sighting) else entry.id,
        kind=entry.kind,
        subject=entry.subject,
        decision=choice,
        note="checked the items by hand",
        **details,  # type: ignore[arg-type]
    )


async def test_sightings_aggregate_into_one_entry_per_category(store: Store) -> None:
    queue = store.review_queue()
    category = subject()
    now = time.time()
    for index in range(8):
        queue.note(Sighting("unknown_category", category, f"/route-{index % 2}", f"item-{index}", now + index))
    found = await settled(store, entry_id("unknown_category", category))
    assert found.count == 8
    assert found.examples == [f"item-{index}" for index in range(5)]  # at most 5
    assert found.routes == ["/route-0", "/route-1"]
    assert found.first_seen == pytest.approx(now, abs=0.01)
    assert found.last_seen == pytest.approx(now + 7, abs=0.01)
    shown = found.to_json()
    assert shown["category"] == category and shown["kind"] == "unknown_category" and "reasons" not in shown


async def test_reports_count_reasons_and_never_who(store: Store) -> None:
    queue = store.review_queue()
    item = subject()
    for reason in ("offensive", "offensive", "wrong_topic"):
        queue.note_report("/recommendations", item, reason, "A title")
    found = await settled(store, entry_id("reported_item", item))
    assert found.to_json() | {"first_seen": None, "last_seen": None} == {
        "id": entry_id("reported_item", item),
        "kind": "reported_item",
        "item": item,
        "route": "/recommendations",
        "routes": ["/recommendations"],
        "count": 3,
        "first_seen": None,
        "last_seen": None,
        "examples": [item],
        "reasons": {"offensive": 2, "wrong_topic": 1},
        "title": "A title",
    }


async def test_a_decision_leaves_the_queue_enters_the_overlay_and_the_audit(store: Store) -> None:
    queue = store.review_queue()
    category = subject()
    queue.note(Sighting("unknown_category", category, "/recommendations", "i1", time.time()))
    entry = await settled(store, entry_id("unknown_category", category))
    audited = len(await queue.audit())
    made = decision(entry, "label", alias_of="gambling")
    await queue.decide(made)
    assert await queue.entry(entry.id) is None
    assert entry.id not in {e.id for e in await queue.entries()}
    assert queue.overlay.aliases[category].alias_of == "gambling"
    assert (await queue.refresh()).aliases[category] == made
    audit = await queue.audit()
    assert len(audit) == audited + 1 and audit[-1] == made
    # Seen again, a decided category stays decided.
    queue.note(Sighting("unknown_category", category, "/recommendations", "i2", time.time()))
    await queue.flush()
    assert await queue.entry(entry.id) is None


async def test_a_later_decision_undoes_an_earlier_one_and_both_stay_in_the_audit(store: Store) -> None:
    queue = store.review_queue()
    item = subject()
    seen = Sighting("flagged_item", item, "/recommendations", item, time.time())
    await queue.decide(decision(seen, "block"))
    assert item in (await queue.refresh()).blocked
    await queue.decide(decision(seen, "dismiss"))
    assert item not in (await queue.refresh()).blocked
    mine = [d.decision for d in await queue.audit() if d.subject == item]
    assert mine == ["block", "dismiss"]


async def test_a_new_report_of_a_dismissed_item_reopens_it(store: Store) -> None:
    queue = store.review_queue()
    item = subject()
    queue.note_report(None, item, "offensive")
    entry = await settled(store, entry_id("reported_item", item))
    await queue.decide(decision(entry, "dismiss"))
    queue.note_report(None, item, "other")
    again = await settled(store, entry.id)
    assert again.count == 1 and again.reasons == {"other": 1}


async def test_the_audit_is_in_the_order_decided_with_every_field(store: Store) -> None:
    queue = store.review_queue()
    category = subject()
    seen = Sighting("unknown_category", category, None, None, time.time())
    made = decision(seen, "label", sensitive=True, label={"en": "betting", "ko": "베팅"})
    await queue.decide(made)
    shown = (await queue.audit())[-1].to_json()
    assert shown["reviewer"] == "staff-1" and shown["decision"] == "label" and shown["entry"] == seen.entry
    assert shown["details"] == {"category": category, "sensitive": True, "label": {"en": "betting", "ko": "베팅"}}
    assert shown["note"] == "checked the items by hand" and shown["at"].endswith("Z")


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_full_queue_drops_the_oldest_of_the_least_seen_and_counts_it(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = "memory://" if backend == "memory" else request.getfixturevalue("fresh_redis").url
    store = create_store(url, timeout=1.0)
    try:
        queue = store.review_queue()
        queue.max_entries = 10
        now = time.time()
        names = [f"c{index}" for index in range(10)]
        for index, name in enumerate(names):
            for _ in range(1 if index < 3 else 2):  # c0, c1, c2 seen once; c0 the oldest
                queue.note(Sighting("unknown_category", name, None, None, now + index))
        await queue.flush()
        queue.note(Sighting("unknown_category", "newcomer", None, None, now + 20))
        await queue.flush()
        left = {entry.subject for entry in await queue.entries()}
        assert left == {*names[1:], "newcomer"}
        assert await queue.dropped() == 1
    finally:
        await store.aclose()


async def test_redis_keeps_the_queue_and_the_decisions_across_a_restart(request: pytest.FixtureRequest) -> None:
    url = store_url("redis", request)
    first = create_store(url, timeout=1.0)
    category = subject()
    try:
        first.review_queue().note(Sighting("unknown_category", category, None, "i", time.time()))
        await first.review_queue().flush()
        await first.review_queue().decide(decision(Sighting("flagged_item", category, None, None, 0), "block"))
    finally:
        await first.aclose()
    second = create_store(url, timeout=1.0)
    try:
        queue = second.review_queue()
        assert await queue.entry(entry_id("unknown_category", category)) is not None
        assert category in (await queue.refresh()).blocked
    finally:
        await second.aclose()


async def test_every_replica_hears_of_a_decision(request: pytest.FixtureRequest) -> None:
    url = store_url("redis", request)
    one, two = create_store(url, timeout=1.0), create_store(url, timeout=1.0)
    heard = asyncio.Event()
    item = subject()
    try:
        await two.review_queue().refresh()  # starts listening
        two.review_queue().on_change(lambda overlay: heard.set() if item in overlay.blocked else None)
        await asyncio.wait_for(two.subscribed.wait(), WAIT)  # type: ignore[attr-defined]
        await one.review_queue().decide(decision(Sighting("flagged_item", item, None, None, 0), "block"))
        await asyncio.wait_for(heard.wait(), WAIT)
        assert item in two.review_queue().overlay.blocked
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_report_reason_outside_the_closed_set_counts_as_other(store: Store) -> None:
    queue = store.review_queue()
    item = subject()
    queue.note_report(None, item, "x" * 500, "t" * 500)
    found = await settled(store, entry_id("reported_item", item))
    assert found.reasons == {"other": 1}
    assert found.title == "t" * 80
