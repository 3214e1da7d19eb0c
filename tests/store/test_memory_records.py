"""The memory store keeps decision records where Python's cycle collector does not walk them.

Kept as objects, 50 records for each of 1,000 users made every full collection walk millions of
references: a pause of 167 ms on the benchmark VM, in the middle of serving (a p99 spike). Kept as
bytes in tuples of atomic values, they add nothing to the collector's work, and still read back whole.
"""

from __future__ import annotations

import gc

from guardrail.store.memory import MemoryStore
from tests.store.test_contract import make_record


def tracked_objects() -> int:
    gc.collect()  # untracks tuples that hold only atomic values, as a collection would anyway
    return len(gc.get_objects())


async def test_records_add_nothing_for_the_cycle_collector_to_walk() -> None:
    store = MemoryStore(decisions_per_user=50)
    for user in range(20):
        store.record(make_record(f"user-{user}"))  # every user's deque exists before we count
    before = tracked_objects()
    for _ in range(49):
        for user in range(20):
            store.record(make_record(f"user-{user}"))
    # 980 more records; a deque per user was already there.
    assert tracked_objects() - before < 50


async def test_a_record_kept_as_bytes_reads_back_whole() -> None:
    store = MemoryStore()
    record = make_record("ana", record_id="d-1")
    store.record(record)
    found = await store.decision("ana", "d-1")
    assert found is not None
    assert (found.id, found.route, found.mode, found.policy, found.locale, found.degraded) == (
        "d-1",
        record.route,
        record.mode,
        record.policy,
        record.locale,
        record.degraded,
    )
    assert list(found.item_ids) == list(record.item_ids)
    assert [(d.action, d.reasons, d.because) for d in found.decisions] == [
        (d.action, d.reasons, d.because) for d in record.decisions
    ]
    assert await store.decision("ana", "d-2") is None
