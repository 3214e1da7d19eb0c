"""`check_items`, the hot loop over a page: it decides each item as the engine would on its own
(the per-shape memo changes nothing), keeps the page's order, and names the first bad item."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from guardrail.bodies import BadBody, read_json, write_json
from guardrail.engine import decide
from guardrail.engine.loop import BadItem, check_items
from guardrail.routes import GuardedRoute, RouteTable
from guardrail.state import UserState
from tests.conftest import make_policy
from tests.engine.support import context

POLICY = make_policy()
CATEGORIES = ["movies", "movies.horror", "sports", "gambling", "health", "health.pregnancy", "health.fitness", "dating"]
SIGNALS = ["watch_history", "search_history", "location_precise", "partner_data", "shared_segments", "play_count"]
STATES = {
    "consented": UserState(consent={"personalization": "granted"}),
    "muted and opted in": UserState(
        consent={"personalization": "granted", "sharing": "granted"},
        muted={"sports": None},
        sensitive={"health": True},
    ),
    "never asked": None,
}


def _route() -> GuardedRoute:
    route = RouteTable(POLICY.routes).match("/recommendations", "GET")
    assert route is not None
    return route


ROUTE = _route()


def random_item(rng: random.Random, index: int) -> dict[str, Any]:
    item: dict[str, Any] = {"id": index if rng.random() < 0.2 else f"rec-{index}", "title": f"Item {index}"}
    if rng.random() < 0.9:
        item["categories"] = rng.sample(CATEGORIES, rng.randint(0, 2))
    roll = rng.random()
    if roll < 0.7:
        item["signals"] = rng.sample(SIGNALS, rng.randint(0, 2))
    elif roll < 0.8:
        item["signals"] = None  # null: the route's default signals, as when missing
    if rng.random() < 0.15:
        item["signal_age_seconds"] = rng.choice([0, 30, 899, 900, 901.5, 86_400])
    if rng.random() < 0.1:
        item["inferred"] = rng.random() < 0.5
    return item


def alone(item: dict[str, Any], state: UserState | None) -> Any:
    """The engine's decision for one item, in a context that has seen nothing else."""
    signals = item.get("signals")
    return decide(
        context(state),
        item.get("categories", []),
        list(ROUTE.default_signals) if signals is None else signals,
        item.get("signal_age_seconds"),
        item.get("inferred", False),
    )


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_each_item_is_decided_as_if_alone(seed: int, state: UserState | None) -> None:
    rng = random.Random(seed)
    items = [random_item(rng, index) for index in range(rng.randint(0, 60))]
    expected = [alone(item, state) for item in items]
    checked = check_items(context(state), ROUTE.fields, copy.deepcopy(items), ROUTE.default_signals, annotate=True)
    assert checked.decisions == expected
    assert checked.item_ids == [item["id"] for item in items]
    shown = [item["id"] for item, decision in zip(items, expected, strict=True) if not decision.hidden]
    assert [item["id"] for item in checked.kept] == shown
    assert checked.hidden == [d for d in expected if d.hidden]
    assert checked.discreet == sum(d.discreet for d in expected)
    assert all(item["explanation"] is not None for item in checked.kept)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"categories": ["movies"]}, "item 1 has no 'id'"),
        ({"id": True}, "item 1 has no 'id'"),
        ({"id": "x", "categories": "movies"}, "item 1: 'categories' and 'signals' must be lists"),
        ({"id": "x", "signals": {"watch_history": 1}}, "item 1: 'categories' and 'signals' must be lists"),
        ({"id": "x", "signal_age_seconds": "5"}, "item 1: 'signal_age_seconds' must be a number of seconds"),
        ({"id": "x", "signal_age_seconds": True}, "item 1: 'signal_age_seconds' must be a number of seconds"),
        ({"id": "x", "inferred": 1}, "item 1: 'inferred' must be true or false"),
        ({"id": "x", "categories": [["movies"]]}, "item 1: categories and signals must be strings"),
        ("x", "item 1 is a str, not an object"),
    ],
)
def test_a_bad_item_is_named(item: Any, message: str) -> None:
    items = [{"id": "fine", "categories": ["movies"]}, item]
    with pytest.raises(BadItem) as caught:
        check_items(context(), ROUTE.fields, items, ("watch_history",), annotate=True)
    assert message in str(caught.value)


# -- reading and writing a body exactly ---------------------------------------------------------


def test_integers_beyond_64_bits_are_read_and_written_exactly() -> None:
    body = b'{"items": [], "big": 123456789012345678901234567890, "small": -9223372036854775809, "f": 0.5}'
    document, exact = read_json(body)
    assert exact
    assert document["big"] == 123456789012345678901234567890 and document["small"] == -(2**63) - 1
    assert write_json(document, exact=True) == body.replace(b", ", b",").replace(b": ", b":")


def test_a_body_without_long_digit_runs_takes_the_fast_path() -> None:
    document, exact = read_json(b'{"n": 123456789012345678, "s": "caf\xc3\xa9"}')
    assert not exact
    assert document == {"n": 123456789012345678, "s": "caf\u00e9"}


@pytest.mark.parametrize(
    "body",
    [b"[NaN, 1234567890123456789012]", b'["\\ud800", 1234567890123456789012]', b"[1e400, 1234567890123456789012]"],
)
def test_the_exact_reader_accepts_nothing_orjson_refuses(body: bytes) -> None:
    with pytest.raises(BadBody) as caught:
        read_json(body)
    assert caught.value.kind == "invalid_json"


def test_a_body_too_deep_to_read_exactly_is_a_bad_body_not_a_crash() -> None:
    body = b"[" * 1000 + b"1234567890123456789012" + b"]" * 1000
    with pytest.raises(BadBody) as caught:
        write_json(read_json(body)[0], exact=True)
    assert caught.value.kind == "too_deep"


def test_the_exact_writer_writes_the_explanations_as_orjson_serialized_them() -> None:
    page = [{"id": 2**70, "categories": ["movies"], "signals": ["watch_history"]}]
    checked = check_items(context(), ROUTE.fields, page, ROUTE.default_signals, annotate=True)
    written = write_json({"items": checked.kept}, exact=True)
    assert written.startswith(b'{"items":[{"id":1180591620717411303424,')
    assert b'"explanation":{"text":"You see this because of what you watched."' in written
