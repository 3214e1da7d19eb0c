"""The contract every store backend passes: each test runs once per backend (memory, redis, redis-cluster).

Only the `Store` protocol is used (guardrail/store/base.py), never a backend's internals. Tests share
one server per backend, so each works on its own users (the `user` fixture, plus ids derived from it).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from guardrail.controls import validate_patch
from guardrail.engine.compiled import is_sensitive_category
from guardrail.engine.decisions import Action, ItemDecision, Reason
from guardrail.errors import StaleRevision
from guardrail.state import UserState
from guardrail.store import DecisionRecord, Store
from tests.conftest import make_policy
from tests.store.conftest import DECISIONS_PER_USER, RETENTION

POLICY = make_policy()
RECORD_WAIT = 2.0  # seconds a queued decision record may take to become readable

# Every key a patch can set with the test policy: (map, key, value in the patch, value in the state).
# 3 purposes + 6 signals + 8 categories + 4 sensitive categories = 21 keys.
ALL_KEYS: list[tuple[str, str, Any, Any]] = [
    *[("consent", purpose, "granted", "granted") for purpose in POLICY.purposes],
    *[("signals", signal, False, False) for signal in POLICY.signals],
    *[("muted", category, {"until": None}, None) for category in POLICY.categories],
    *[("sensitive", category, True, True) for category in POLICY.categories if is_sensitive_category(POLICY, category)],
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def later(**delta: float) -> datetime:
    """A time in the future, in whole seconds (as a client would send it)."""
    return (utcnow() + timedelta(**delta)).replace(microsecond=0)


async def change(store: Store, user: str, body: dict[str, Any], *, if_match: int | None = None) -> UserState:
    """Validate a JSON merge patch against the test policy and apply it, as the controls API does."""
    now = utcnow()
    return await store.patch(user, validate_patch(POLICY, body, now), if_match=if_match, now=now)


def controls(state: UserState | None) -> dict[str, Any]:
    """A state's controls as plain data (without revision and updated_at), for readable comparisons."""
    assert state is not None, "expected a stored state, got None"
    return {
        "personalization": state.personalization,
        "consent": dict(state.consent),
        "signals": dict(state.signals),
        "muted": dict(state.muted),
        "sensitive": dict(state.sensitive),
        "locale": state.locale,
    }


def expected(**values: Any) -> dict[str, Any]:
    """The controls of a user who changed only `values`."""
    return {
        "personalization": True,
        "consent": {},
        "signals": {},
        "muted": {},
        "sensitive": {},
        "locale": None,
        **values,
    }


def key_patch(map_name: str, key: str, value: Any) -> dict[str, Any]:
    return {map_name: {key: value}}


# ---------------------------------------------------------------------------------------------
# Loading and patching


async def test_unknown_user_has_no_state(store: Store, user: str) -> None:
    assert await store.load(user) is None


async def test_first_patch_creates_revision_1(store: Store, user: str) -> None:
    before = utcnow()
    state = await change(store, user, {"signals": {"location_precise": False}})

    assert state.revision == 1
    assert controls(state) == expected(signals={"location_precise": False})

    loaded = await store.load(user)
    assert controls(loaded) == controls(state)
    assert loaded is not None
    assert loaded.revision == 1
    assert loaded.updated_at is not None
    assert loaded.updated_at.tzinfo is not None
    assert abs(loaded.updated_at - before) < timedelta(seconds=5)


async def test_updated_at_follows_each_patch(store: Store, user: str) -> None:
    first = utcnow() - timedelta(hours=1)
    second = utcnow()
    await store.patch(user, validate_patch(POLICY, {"locale": "ko"}, first), if_match=None, now=first)
    await store.patch(user, validate_patch(POLICY, {"locale": "en"}, second), if_match=None, now=second)

    loaded = await store.load(user)
    assert loaded is not None
    assert loaded.updated_at is not None
    assert abs(loaded.updated_at - second) < timedelta(milliseconds=1)


async def test_patches_merge_key_by_key(store: Store, user: str) -> None:
    snooze_end = later(days=2)
    await change(store, user, {"consent": {"personalization": "granted"}, "signals": {"location_precise": False}})
    await change(store, user, {"consent": {"sharing": "denied"}, "muted": {"sports": {"until": None}}, "locale": "ko"})
    state = await change(
        store,
        user,
        {
            "muted": {"movies.horror": {"until": snooze_end.isoformat()}},
            "sensitive": {"health": True},
            "signals": {"watch_history": True},
            "personalization": False,
        },
    )

    want = expected(
        personalization=False,
        consent={"personalization": "granted", "sharing": "denied"},
        signals={"location_precise": False, "watch_history": True},
        muted={"sports": None, "movies.horror": snooze_end},
        sensitive={"health": True},
        locale="ko",
    )
    assert controls(state) == want
    loaded = await store.load(user)
    assert controls(loaded) == want
    assert loaded is not None
    assert loaded.revision == 3


async def test_a_later_patch_overwrites_a_key(store: Store, user: str) -> None:
    await change(store, user, {"consent": {"sharing": "granted"}, "muted": {"sports": {"until": None}}})
    snooze_end = later(hours=3)
    await change(
        store, user, {"consent": {"sharing": "denied"}, "muted": {"sports": {"until": snooze_end.isoformat()}}}
    )

    assert controls(await store.load(user)) == expected(consent={"sharing": "denied"}, muted={"sports": snooze_end})


async def test_null_removes_one_key(store: Store, user: str) -> None:
    await change(
        store,
        user,
        {
            "consent": {"personalization": "granted", "sharing": "denied"},
            "signals": {"location_precise": False, "partner_data": False},
            "muted": {"sports": {"until": None}, "gambling": {"until": None}},
            "sensitive": {"health": True, "dating": False},
        },
    )
    state = await change(
        store,
        user,
        {
            "consent": {"sharing": None},
            "signals": {"partner_data": None},
            "muted": {"sports": None},
            "sensitive": {"dating": None},
        },
    )

    want = expected(
        consent={"personalization": "granted"},
        signals={"location_precise": False},
        muted={"gambling": None},
        sensitive={"health": True},
    )
    assert controls(state) == want
    assert controls(await store.load(user)) == want


async def test_removing_an_absent_key_is_harmless(store: Store, user: str) -> None:
    await change(store, user, {"signals": {"location_precise": False}})
    state = await change(store, user, {"signals": {"partner_data": None}, "muted": {"sports": None}})

    assert state.revision == 2
    assert controls(await store.load(user)) == expected(signals={"location_precise": False})


async def test_null_map_clears_only_that_map(store: Store, user: str) -> None:
    await change(
        store,
        user,
        {
            "consent": {"personalization": "granted"},
            "signals": {"location_precise": False, "partner_data": False},
            "muted": {"sports": {"until": None}, "movies": {"until": later(days=1).isoformat()}},
            "sensitive": {"health": True},
        },
    )
    await change(store, user, {"signals": None, "muted": None})

    assert controls(await store.load(user)) == expected(
        consent={"personalization": "granted"}, sensitive={"health": True}
    )


async def test_null_resets_personalization_and_locale(store: Store, user: str) -> None:
    await change(store, user, {"personalization": False, "locale": "ko", "signals": {"play_count": False}})
    state = await change(store, user, {"personalization": None, "locale": None})

    assert controls(state) == expected(signals={"play_count": False})
    loaded = await store.load(user)
    assert controls(loaded) == expected(signals={"play_count": False})
    assert loaded is not None
    assert loaded.revision == 2


async def test_clearing_everything_keeps_a_state(store: Store, user: str) -> None:
    """A user who changed something and changed it back still has a state (and a revision) to compare against."""
    await change(store, user, {"signals": {"location_precise": False}})
    await change(store, user, {"signals": None})

    loaded = await store.load(user)
    assert controls(loaded) == expected()
    assert loaded is not None
    assert loaded.revision == 2


async def test_users_do_not_share_state(store: Store, user: str) -> None:
    other = f"{user}-other"
    await change(store, user, {"signals": {"location_precise": False}})
    await change(store, other, {"muted": {"sports": {"until": None}}})

    assert controls(await store.load(user)) == expected(signals={"location_precise": False})
    assert controls(await store.load(other)) == expected(muted={"sports": None})
    assert await store.load(f"{user}-nobody") is None


# ---------------------------------------------------------------------------------------------
# If-Match


async def test_if_match_with_the_current_revision_succeeds(store: Store, user: str) -> None:
    first = await change(store, user, {"signals": {"location_precise": False}})
    second = await change(store, user, {"locale": "ko"}, if_match=first.revision)

    assert second.revision == 2
    assert controls(await store.load(user)) == expected(signals={"location_precise": False}, locale="ko")


async def test_if_match_zero_for_a_user_without_state(store: Store, user: str) -> None:
    """A user who never changed anything reads revision 0 (the default state), so If-Match 0 must work."""
    state = await change(store, user, {"locale": "ko"}, if_match=0)

    assert state.revision == 1


async def test_stale_if_match_raises_and_changes_nothing(store: Store, user: str) -> None:
    await change(store, user, {"signals": {"location_precise": False}})
    await change(store, user, {"locale": "ko"})
    before = await store.load(user)
    assert before is not None

    for stale in (0, 1, 3, 99):
        with pytest.raises(StaleRevision) as caught:
            await change(store, user, {"muted": {"sports": {"until": None}}, "locale": None}, if_match=stale)
        assert caught.value.current == 2

    after = await store.load(user)
    assert controls(after) == controls(before)
    assert after is not None
    assert after.revision == 2
    assert after.updated_at == before.updated_at


async def test_stale_if_match_on_a_user_without_state_creates_nothing(store: Store, user: str) -> None:
    with pytest.raises(StaleRevision) as caught:
        await change(store, user, {"locale": "ko"}, if_match=4)

    assert caught.value.current == 0
    assert await store.load(user) is None


# ---------------------------------------------------------------------------------------------
# Concurrency


async def test_concurrent_patches_lose_nothing(store: Store, user: str) -> None:
    """50 patches at once, cycling through all 21 keys: every key ends set and every patch counted once."""
    bodies = [key_patch(*ALL_KEYS[i % len(ALL_KEYS)][:3]) for i in range(50)]

    states = await asyncio.gather(*(change(store, user, body) for body in bodies))

    assert sorted(state.revision for state in states) == list(range(1, 51))
    loaded = await store.load(user)
    assert loaded is not None
    assert loaded.revision == 50
    want = expected()
    for map_name, key, _, value in ALL_KEYS:
        want[map_name] = {**want[map_name], key: value}
    assert controls(loaded) == want


async def test_concurrent_patches_to_many_users(store: Store, user: str) -> None:
    users = [f"{user}-{n}" for n in range(10)]
    keys = ALL_KEYS[:5]

    await asyncio.gather(*(change(store, u, key_patch(*key[:3])) for u in users for key in keys))

    want = expected()
    for map_name, key, _, value in keys:
        want[map_name] = {**want[map_name], key: value}
    for u in users:
        loaded = await store.load(u)
        assert controls(loaded) == want, u
        assert loaded is not None
        assert loaded.revision == len(keys), u


async def test_concurrent_patches_with_the_same_if_match_one_wins(store: Store, user: str) -> None:
    base = await change(store, user, {"locale": "ko"})
    contenders = ALL_KEYS[:10]

    results = await asyncio.gather(
        *(change(store, user, key_patch(*key[:3]), if_match=base.revision) for key in contenders),
        return_exceptions=True,
    )

    winners = [(key, result) for key, result in zip(contenders, results, strict=True) if isinstance(result, UserState)]
    losers = [result for result in results if not isinstance(result, UserState)]
    assert len(winners) == 1, results
    assert all(isinstance(loser, StaleRevision) and loser.current == 2 for loser in losers), losers
    (map_name, key, _, value), won = winners[0]
    assert won.revision == 2
    loaded = await store.load(user)
    assert controls(loaded) == expected(locale="ko", **{map_name: {key: value}})
    assert loaded is not None
    assert loaded.revision == 2


# ---------------------------------------------------------------------------------------------
# Snoozes


async def test_a_snooze_ends_on_time_and_a_mute_does_not(store: Store, user: str) -> None:
    snooze_end = utcnow() + timedelta(seconds=1)
    await change(store, user, {"muted": {"sports": {"until": snooze_end.isoformat()}, "gambling": {"until": None}}})

    loaded = await store.load(user)
    assert loaded is not None
    assert set(loaded.active_mutes(utcnow())) == {"sports", "gambling"}

    await asyncio.sleep((snooze_end - utcnow()).total_seconds() + 0.1)

    loaded = await store.load(user)
    assert loaded is not None
    assert loaded.active_mutes(utcnow()) == {"gambling": None}
    # Whether the ended snooze is still stored is the backend's business: only active mutes are shown.
    state = await change(store, user, {"muted": {"dating": {"until": None}}})
    assert state.active_mutes(utcnow()) == {"gambling": None, "dating": None}


async def test_a_pause_is_stored_kept_across_changes_resumed_and_ends_by_itself(store: Store, user: str) -> None:
    until = later(days=7)
    state = await change(store, user, {"paused_until": until.isoformat()})
    assert state.paused_until == until
    loaded = await store.load(user)
    assert loaded is not None and loaded.paused_until == until and loaded.pause_end(utcnow()) == until
    # A change to something else keeps the pause; null resumes now.
    state = await change(store, user, {"signals": {"location_precise": False}})
    assert state.paused_until == until
    state = await change(store, user, {"paused_until": None})
    assert state.paused_until is None
    assert (await store.load(user)) == state

    pause_end = utcnow() + timedelta(seconds=1)
    await change(store, user, {"paused_until": pause_end.isoformat()})
    await asyncio.sleep((pause_end - utcnow()).total_seconds() + 0.1)
    loaded = await store.load(user)
    assert loaded is not None and loaded.pause_end(utcnow()) is None
    assert loaded.to_json(user, utcnow())["paused_until"] is None
    # The next change drops the ended pause, as it drops ended snoozes.
    state = await change(store, user, {"signals": {"location_precise": True}})
    assert state.paused_until is None


# ---------------------------------------------------------------------------------------------
# Decision records


def make_record(user: str, created_at: float | None = None, *, record_id: str | None = None) -> DecisionRecord:
    return DecisionRecord(
        id=record_id or uuid4().hex,
        user=user,
        created_at=time.time() if created_at is None else created_at,
        route="/recommendations",
        mode="enforce",
        policy="test-policy",
        locale="ko",
        degraded=False,
        item_ids=[101, "b-2"],
        decisions=[
            ItemDecision(Action.HIDE, (Reason.TOPIC_MUTED,), 0, ("watch_history",), None, muted_topic="sports"),
            ItemDecision(
                Action.KEEP,
                (),
                10,
                ("watch_history",),
                {"text": "t", "because": ["watch_history"], "controls": "/guardrail/controls"},
            ),
        ],
    )


EXPECTED_ITEMS = (
    ("101", "hide", ("topic_muted",), ("watch_history",)),
    ("b-2", "keep", (), ("watch_history",)),
)


async def wait_for_decisions(store: Store, user: str, ids: list[str]) -> Sequence[DecisionRecord]:
    """`store.decisions(user)` once its record ids (newest first) are `ids`; records may be written in the
    background, so poll for up to RECORD_WAIT seconds."""
    deadline = time.monotonic() + RECORD_WAIT
    while True:
        records = await store.decisions(user)
        seen = [record.id for record in records]
        if seen == ids:
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"after {RECORD_WAIT} s the decision records of {user} are {seen}, expected {ids}")
        await asyncio.sleep(0.02)


async def test_no_decisions_for_a_user_without_records(store: Store, user: str) -> None:
    assert list(await store.decisions(user)) == []
    assert await store.decision(user, uuid4().hex) is None


async def test_a_record_naming_a_pages_distinct_decisions_reads_back(store: Store, user: str) -> None:
    """As the per-item loop gives it: each distinct decision once, and a character per item naming one."""
    hidden, kept = make_record(user).decisions
    record = DecisionRecord(
        **{**vars_of(make_record(user)), "item_ids": ["a", 2, "c", "d"], "decisions": [kept, hidden, kept, kept]},
        distinct=[kept, hidden],
        per_item="0100",
    )
    store.record(record)

    (listed,) = await wait_for_decisions(store, user, [record.id])
    assert listed.items == (
        ("a", "keep", (), ("watch_history",)),
        ("2", "hide", ("topic_muted",), ("watch_history",)),
        ("c", "keep", (), ("watch_history",)),
        ("d", "keep", (), ("watch_history",)),
    )


def vars_of(record: DecisionRecord) -> dict[str, Any]:
    """A record's fields but the two that only make it cheaper to write."""
    cheaper = ("distinct", "per_item")
    return {name: getattr(record, name) for name in DecisionRecord.__dataclass_fields__ if name not in cheaper}


async def test_a_recorded_decision_reads_back(store: Store, user: str) -> None:
    assert not inspect.iscoroutinefunction(store.record), "record() is synchronous: it must never be awaited"
    record = make_record(user)
    store.record(record)

    (listed,) = await wait_for_decisions(store, user, [record.id])
    found = await store.decision(user, record.id)

    assert found is not None
    for got in (listed, found):
        assert got.id == record.id
        assert got.user == user
        assert got.created_at == pytest.approx(record.created_at, abs=0.001)
        assert (got.route, got.mode, got.policy, got.locale, got.degraded) == (
            "/recommendations",
            "enforce",
            "test-policy",
            "ko",
            False,
        )
        assert got.items == EXPECTED_ITEMS
    # Recording decisions is not changing controls.
    assert await store.load(user) is None


async def test_decisions_are_newest_first_and_capped(store: Store, user: str) -> None:
    start = time.time() - 100
    records = [make_record(user, start + 10 * n) for n in range(8)]
    for record in records:
        store.record(record)

    newest_first = [record.id for record in reversed(records)]
    listed = await wait_for_decisions(store, user, newest_first[:DECISIONS_PER_USER])

    assert [record.created_at for record in listed] == sorted((r.created_at for r in listed), reverse=True)
    assert [record.id for record in await store.decisions(user, limit=2)] == newest_first[:2]
    assert await store.decision(user, records[0].id) is None  # pushed out by newer ones
    found = await store.decision(user, records[-1].id)
    assert found is not None
    assert found.items == EXPECTED_ITEMS


async def test_someone_elses_decision_is_not_yours(store: Store, user: str) -> None:
    other = f"{user}-other"
    record = make_record(user)
    store.record(record)
    await wait_for_decisions(store, user, [record.id])

    assert await store.decision(other, record.id) is None
    assert list(await store.decisions(other)) == []
    assert await store.decision(user, uuid4().hex) is None


async def test_records_older_than_the_retention_are_not_returned(store: Store, user: str) -> None:
    stale = make_record(user, time.time() - (RETENTION + timedelta(days=1)).total_seconds())
    fresh = make_record(user)
    store.record(stale)
    store.record(fresh)

    await wait_for_decisions(store, user, [fresh.id])
    assert await store.decision(user, stale.id) is None


# ---------------------------------------------------------------------------------------------
# Erasure


async def test_erase_forgets_the_user_and_only_that_user(store: Store, user: str) -> None:
    other = f"{user}-other"
    for who in (user, other):
        await change(store, who, {"signals": {"location_precise": False}, "muted": {"sports": {"until": None}}})
    mine, theirs = make_record(user), make_record(other)
    store.record(mine)
    store.record(theirs)
    await wait_for_decisions(store, user, [mine.id])
    await wait_for_decisions(store, other, [theirs.id])

    await store.erase(user)

    assert await store.load(user) is None
    assert list(await store.decisions(user)) == []
    assert await store.decision(user, mine.id) is None
    assert controls(await store.load(other)) == expected(signals={"location_precise": False}, muted={"sports": None})
    assert [record.id for record in await store.decisions(other)] == [theirs.id]
    # An erased user starts over: they read revision 0 again, so If-Match 0 applies.
    state = await change(store, user, {"locale": "ko"}, if_match=0)
    assert state.revision == 1


async def test_records_made_before_an_erase_do_not_outlive_it(store: Store, user: str) -> None:
    # Records are written in the background: one queued just before the erase, and one made before it
    # but handed over after it (a request still being answered, another replica's queue) are both
    # part of what the user asked to erase. One made after the erase is new, and kept.
    queued = make_record(user, time.time() - 1)
    store.record(queued)
    await store.erase(user)
    late = make_record(user, time.time() - 1)
    store.record(late)
    after = make_record(user, time.time() + 1)
    store.record(after)

    listed = await wait_for_decisions(store, user, [after.id])  # (written in order: the others are in too)
    assert [record.id for record in listed] == [after.id]
    assert await store.decision(user, queued.id) is None
    assert await store.decision(user, late.id) is None


async def test_erasing_an_unknown_user_is_harmless(store: Store, user: str) -> None:
    await store.erase(user)

    assert await store.load(user) is None


# ---------------------------------------------------------------------------------------------
# Health


async def test_check_answers_on_a_live_store(store: Store) -> None:
    assert isinstance(store, Store)
    await store.check()
