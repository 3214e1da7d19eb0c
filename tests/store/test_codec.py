"""How a decision record is written as bytes (guardrail/store/codec.py), in every format a store may
still hold: a record written by an older version reads back as it was written."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from guardrail.engine.decisions import Action, ItemDecision, Reason
from guardrail.state import ControlsPatch
from guardrail.store import DecisionRecord
from guardrail.store.codec import decode_record, decode_state, encode_record, patch_ops

HIDDEN = ItemDecision(
    Action.HIDE, (Reason.TOPIC_MUTED,), 0, ("watch_history",), None, muted_topic="sports", categories=("sports",)
)
KEPT = ItemDecision(Action.KEEP, (), 10, ("watch_history",), {"text": "t"}, categories=("movies", "movies.horror"))
ITEMS = (
    ("a", "keep", (), ("watch_history",)),
    ("2", "hide", ("topic_muted",), ("watch_history",)),
    ("c", "keep", (), ("watch_history",)),
)
HEADER = {
    "id": "d-1",
    "t": 1764147600.5,
    "route": "/recommendations",
    "mode": "enforce",
    "policy": "test-policy",
    "locale": "en",
    "degraded": False,
}


def record(**cheaper: object) -> DecisionRecord:
    return DecisionRecord(
        id="d-1",
        user="ana",
        created_at=1764147600.5,
        route="/recommendations",
        mode="enforce",
        policy="test-policy",
        locale="en",
        degraded=False,
        item_ids=["a", 2, "c"],
        decisions=[KEPT, HIDDEN, KEPT],
        **cheaper,  # type: ignore[arg-type]
    )


def test_a_record_with_its_distinct_decisions_says_each_once() -> None:
    written = encode_record(record(distinct=[KEPT, HIDDEN], per_item="010"))

    assert orjson.loads(written) == {
        **HEADER,
        "ids": ["a", 2, "c"],
        "s": [
            ["keep", [], ["watch_history"], ["movies", "movies.horror"]],
            ["hide", ["topic_muted"], ["watch_history"], ["sports"]],
        ],
        "i": "010",
    }
    found = decode_record("ana", written)
    assert found.items == ITEMS
    assert found == decode_record("ana", encode_record(record()))


def test_a_record_without_an_index_says_each_items_decision() -> None:
    written = encode_record(record())

    assert orjson.loads(written)["d"] == [
        ["keep", [], ["watch_history"], ["movies", "movies.horror"]],
        ["hide", ["topic_muted"], ["watch_history"], ["sports"]],
        ["keep", [], ["watch_history"], ["movies", "movies.horror"]],
    ]
    found = decode_record("ana", written)
    assert found.items == ITEMS
    # Each item's topics, for its "why?" page, come back with its decision.
    assert [found.topics(i) for i in range(3)] == [
        ("movies", "movies.horror"),
        ("sports",),
        ("movies", "movies.horror"),
    ]


def test_records_written_by_older_versions_read_back() -> None:
    parts = [
        ["keep", [], ["watch_history"]],
        ["hide", ["topic_muted"], ["watch_history"]],
        ["keep", [], ["watch_history"]],
    ]
    per_item = orjson.dumps({**HEADER, "ids": ["a", 2, "c"], "d": parts})
    pairs = orjson.dumps(
        {**HEADER, "items": [[item_id, part] for item_id, part in zip(["a", 2, "c"], parts, strict=True)]}
    )

    for written in (per_item, pairs):
        found = decode_record("ana", written)
        assert (found.id, found.user, found.created_at, found.locale) == ("d-1", "ana", 1764147600.5, "en")
        assert found.items == ITEMS
        assert found.titles is None and found.title(0) is None
        assert found.topics(0) == ()  # older records kept no categories


def test_a_record_keeps_its_items_titles_when_the_route_names_them() -> None:
    titled = record(distinct=[KEPT, HIDDEN], per_item="010", titles=["Alien", None, "Cars 2"])
    written = encode_record(titled)

    assert orjson.loads(written)["n"] == ["Alien", None, "Cars 2"]
    found = decode_record("ana", written)
    assert found.items == ITEMS and found.titles == titled.titles
    assert [found.title(i) for i in range(3)] == ["Alien", None, "Cars 2"]
    # A route without a display field writes no titles at all.
    assert "n" not in orjson.loads(encode_record(record()))


def test_a_state_stored_before_pauses_reads_back_not_paused() -> None:
    old = {b"p": b"0", b"l": b"ko", b"r": b"3", b"t": b"1764147600.0", b"m:sports": b""}
    state = decode_state(old)
    assert state is not None
    assert state.paused_until is None and state.personalization is False and state.locale == "ko"
    assert dict(state.muted) == {"sports": None} and state.revision == 3


def test_a_pause_is_written_and_read_as_epoch_seconds() -> None:
    until = datetime(2026, 12, 13, 9, 0, tzinfo=UTC)
    ops = patch_ops(ControlsPatch(paused_until=until))
    assert ops == ["set", "u", repr(until.timestamp())]
    state = decode_state({b"u": ops[2].encode(), b"r": b"1"})
    assert state is not None and state.paused_until == until
    assert patch_ops(ControlsPatch(paused_until=None)) == ["del", "u", ""]
    assert patch_ops(ControlsPatch(locale="ko")) == ["set", "l", "ko"]  # a patch without it leaves it be
