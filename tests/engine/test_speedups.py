"""The C loop (guardrail/_speedups.c) against its reference, the Python loop of guardrail/engine/loop.py.

Both must give the same decisions, the same annotated items and the same hidden list for every
policy, user and page, and name the same problem in the same words for a malformed item.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrail.bodies import has_digit_run, has_digit_run_python
from guardrail.engine import CompiledPolicy, RequestSignals, UserContext
from guardrail.engine.loop import DISTINCT, INDEX_FIRST, BadItem, CheckedItems, check_items, check_items_python
from guardrail.explain.render import explanation
from guardrail.policy.models import Policy
from guardrail.routes import RouteTable
from guardrail.speedups import ACCELERATED
from guardrail.state import UserState
from tests.engine.support import COMPILED, CONSENTED, NOW, context
from tests.strategies import examples, items, policies, request_signals, states

# What an upstream sends where the item contract wants something else.
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**63, float("nan"), "", "x", [], {}, [None], [1], [[]], [{}], {"a": 1}
]  # fmt: skip
FIELDS = ["id", "categories", "signals", "signal_age_seconds", "inferred"]


def test_the_c_loop_is_built() -> None:
    """CI installs a C compiler: without one the build falls back to Python, and this says so. The
    no-compiler leg of .ci/run sets GUARDRAIL_NO_EXTENSIONS: there the Python loop must be what runs."""
    if os.environ.get("GUARDRAIL_PURE_PYTHON") or os.environ.get("GUARDRAIL_NO_EXTENSIONS"):
        assert not ACCELERATED
        return
    assert ACCELERATED, (
        "guardrail/_speedups.c is not built: install a C compiler (apt-get install gcc) "
        "and reinstall with `pip install -e .`"
    )


@st.composite
def pages(draw: st.DrawFn, policy: Policy) -> list[Any]:
    """Well-formed items, and sometimes one of them broken: a field replaced or removed, or the item itself."""
    page: list[Any] = list(draw(items(policy)))
    broken: bool = draw(st.booleans())
    if page and broken:
        index = draw(st.integers(0, len(page) - 1))
        how = draw(st.sampled_from(["replace field", "remove field", "replace item"]))
        if how == "replace item":
            page[index] = draw(st.sampled_from(ODD_VALUES))
        elif how == "replace field":
            page[index][draw(st.sampled_from(FIELDS))] = draw(st.sampled_from(ODD_VALUES))
        else:
            page[index].pop(draw(st.sampled_from(FIELDS)), None)
    return page


def outcome(check: Any, ctx: UserContext, page: list[Any], annotate: bool, as_dicts: bool = False) -> tuple[Any, ...]:
    """What a caller sees: the serialized result, or the problem it names."""
    route = RouteTable(ctx.compiled.policy.routes).match("/recommendations", "GET")
    assert route is not None
    try:
        checked: CheckedItems = check(
            ctx, route.fields, page, route.default_signals, annotate=annotate, as_dicts=as_dicts
        )
    except BadItem as exc:
        return ("bad item", str(exc))
    return (
        checked.decisions,
        checked.item_ids,
        orjson.dumps(checked.kept, option=orjson.OPT_SERIALIZE_NUMPY),
        checked.hidden,
        checked.discreet,
        checked.unknown,
        checked.distinct,
        checked.per_item,
        checked.hidden_by_kind,
        checked.wide_ids,
    )


# Only where the Python loop runs on purpose: test_the_c_loop_is_built fails wherever it is missing by accident.
@pytest.mark.skipif(not ACCELERATED, reason="the Python loop runs on purpose: there is no C loop to compare")
@examples(150)
@given(data=st.data(), policy=policies(), annotate=st.booleans(), as_dicts=st.booleans())
def test_c_and_python_loops_agree(data: st.DataObject, policy: Policy, annotate: bool, as_dicts: bool) -> None:
    state = data.draw(states(policy))
    request = data.draw(request_signals(policy))
    page = data.draw(pages(policy))
    compiled = CompiledPolicy(policy)

    def context() -> UserContext:
        return UserContext(compiled, state, request or RequestSignals(), locale="en", now=NOW, explain=explanation)

    c_ctx, python_ctx = context(), context()
    # Twice each: the first pass fills the memo through the engine, the second reads it.
    for _ in range(2):
        expected = outcome(check_items_python, python_ctx, copy.deepcopy(page), annotate, as_dicts)
        assert outcome(check_items, c_ctx, copy.deepcopy(page), annotate, as_dicts) == expected


# Bodies where digits come in runs of every length, next to each other and at both ends.
digit_heavy_bodies = st.lists(st.sampled_from([b"0", b"7", b"9", b",", b"-", b".", b"e", b"/", b":"]), max_size=90).map(
    b"".join
)


@pytest.mark.skipif(not ACCELERATED, reason="GUARDRAIL_PURE_PYTHON: only one version to compare")
@examples(400)
@given(body=st.one_of(digit_heavy_bodies, st.binary(max_size=60)), length=st.integers(1, 25))
def test_c_and_python_find_the_same_digit_runs(body: bytes, length: int) -> None:
    assert has_digit_run(body, length) is has_digit_run_python(body, length)


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'{"n":1234567890123456789}', True),
        (b'{"n":-1234567890123456789}', True),
        (b'{"n":123456789012345678}', False),
        (b"1234567890123456789", True),
        (b'{"a":123456789,"b":0123456789}', False),
        (b"", False),
    ],
)
def test_a_run_of_19_digits_is_found_wherever_it_is(body: bytes, found: bool) -> None:
    assert has_digit_run(body, 19) is found
    assert has_digit_run_python(body, 19) is found


@pytest.mark.skipif(not ACCELERATED, reason="GUARDRAIL_PURE_PYTHON: the C module is not there")
def test_has_digit_run_refuses_what_it_cannot_read() -> None:
    from guardrail import _speedups

    with pytest.raises(ValueError, match="at least 1"):
        _speedups.has_digit_run(b"123", 0)
    with pytest.raises(TypeError, match="bytes and a length"):
        _speedups.has_digit_run("123", 3)  # type: ignore[arg-type]


def _shapes_page(count: int) -> list[dict[str, Any]]:
    """`count` items, each of a shape of its own (and so a decision of its own), every third one hidden
    by a muted topic; the hidden seventh one has an integer id beyond 64 bits."""
    categories = ["movies", "sports", "gambling", "health", "dating", "movies.horror"]
    signals = ["watch_history", "search_history", "location_precise", "partner_data", "shared_segments"]
    page: list[dict[str, Any]] = []
    for index in range(count):
        picked = [signals[at] for at in range(len(signals)) if index >> at & 1]
        page.append(
            {
                "id": 2**70 if index == 6 else f"rec-{index}",
                "categories": ["sports"] if index % 3 == 0 else [categories[index % len(categories)]],
                "signals": [*picked, *(["play_count"] * (index // 32))],
            }
        )
    return page


@pytest.mark.parametrize("count", [0, 3, 31, 32, 33, 70])
def test_both_loops_name_a_pages_distinct_decisions_up_to_the_limit(count: int) -> None:
    """`distinct` and `index` spell out every item's decision, or are None past DISTINCT distinct ones;
    `hidden_by_kind` counts the hidden items by notice key; `wide_ids` says an id needs more than 64 bits."""
    state = UserState(consent=CONSENTED.consent, muted={"sports": None})
    page = _shapes_page(count)
    route = RouteTable(COMPILED.policy.routes).match("/recommendations", "GET")
    assert route is not None
    seen = []
    for check in (check_items_python, check_items) if ACCELERATED else (check_items_python,):
        ctx = context(state)
        for _ in range(2):  # the memo filled, then read
            checked = check(ctx, route.fields, copy.deepcopy(page), route.default_signals, annotate=True)
            seen.append((orjson.dumps(checked.kept), *checked[:2], *checked[3:]))
        if len(set(map(id, checked.decisions))) > DISTINCT:
            assert checked.distinct is None and checked.per_item is None
        else:
            assert checked.distinct is not None and checked.per_item is not None
            assert [checked.distinct[ord(char) - INDEX_FIRST] for char in checked.per_item] == checked.decisions
            assert len(set(map(id, checked.distinct))) == len(checked.distinct)
        by_kind: dict[Any, int] = {}
        for decision in checked.hidden:
            by_kind[decision.notice_key] = by_kind.get(decision.notice_key, 0) + 1
        assert checked.hidden_by_kind == by_kind
        assert checked.wide_ids is (count > 6)
    assert all(found == seen[0] for found in seen)


@pytest.mark.skipif(not ACCELERATED, reason="GUARDRAIL_PURE_PYTHON: the C module is not there")
def test_both_loops_have_the_same_limit_on_distinct_decisions() -> None:
    from guardrail import _speedups

    assert _speedups.DISTINCT == DISTINCT
