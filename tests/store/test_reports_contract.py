"""Reports in every store backend (memory, redis, redis-cluster): kept per user, one per item of a
decision, newest first, capped, and gone with an erasure. Only the `Store` protocol is used."""

from __future__ import annotations

import time

from guardrail.state import REPORTS_PER_USER, Report
from guardrail.store import Store


def report(decision: str, item: str, reason: str = "not_for_me", *, at: float | None = None, **extra: str) -> Report:
    return Report(decision, item, reason, time.time() if at is None else at, "/recommendations", **extra)


async def test_a_report_is_kept_for_its_author(store: Store, user: str) -> None:
    made = report("d1", "m1", "offensive", title="A film", note="rude words")
    assert await store.add_report(user, made) == made
    assert list(await store.reports(user)) == [made]
    assert list(await store.reports(user + "-other")) == []


async def test_an_item_of_a_decision_is_reported_once(store: Store, user: str) -> None:
    first = report("d1", "m1", "offensive")
    assert await store.add_report(user, first) == first
    assert await store.add_report(user, report("d1", "m1", "other")) is None
    assert list(await store.reports(user)) == [first]
    # The same item in another decision, or another item, is another report.
    again = report("d2", "m1")
    other = report("d1", "m2")
    assert await store.add_report(user, again) == again
    assert await store.add_report(user, other) == other
    assert {(r.decision, r.item) for r in await store.reports(user)} == {("d1", "m1"), ("d2", "m1"), ("d1", "m2")}


async def test_reports_come_newest_first(store: Store, user: str) -> None:
    now = time.time()
    for index in range(3):
        await store.add_report(user, report(f"d{index}", "m1", at=now - 10 + index))
    assert [r.decision for r in await store.reports(user)] == ["d2", "d1", "d0"]


async def test_past_the_cap_the_oldest_report_goes(store: Store, user: str) -> None:
    now = time.time()
    for index in range(REPORTS_PER_USER + 1):
        await store.add_report(user, report(f"d{index}", "m1", at=now - 1000 + index))
    kept = await store.reports(user)
    assert len(kept) == REPORTS_PER_USER
    assert "d0" not in {r.decision for r in kept}
    assert kept[0].decision == f"d{REPORTS_PER_USER}"


async def test_an_erasure_forgets_the_reports(store: Store, user: str) -> None:
    await store.add_report(user, report("d1", "m1"))
    await store.add_report(user + "-other", report("d1", "m1"))
    await store.erase(user)
    assert list(await store.reports(user)) == []
    assert len(await store.reports(user + "-other")) == 1
    # After an erasure the item can be reported again.
    assert await store.add_report(user, report("d1", "m1")) is not None


async def test_text_round_trips(store: Store, user: str) -> None:
    made = report("d1", "id/with space", "wrong_topic", title="영화 — “quotes”", note="line\nbreak")
    await store.add_report(user, made)
    assert list(await store.reports(user)) == [made]
