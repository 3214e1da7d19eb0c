"""The C loop (guardrail/_speedups.c) against its reference, the Python loop of guardrail/items.py.

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

from guardrail.engine import CompiledPolicy, RequestSignals, UserContext
from guardrail.items import ACCELERATED, BadBody, CheckedItems, check_items, check_items_python
from guardrail.policy.models import Policy
from guardrail.routes import RouteTable
from tests.engine.support import NOW
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


def outcome(check: Any, ctx: UserContext, page: list[Any], annotate: bool) -> tuple[Any, ...]:
    """What a caller sees: the serialized result, or the problem it names."""
    route = RouteTable(ctx.compiled.policy.routes).match("/recommendations", "GET")
    assert route is not None
    try:
        checked: CheckedItems = check(ctx, route, page, route.default_signals, annotate=annotate)
    except BadBody as exc:
        return ("bad body", exc.kind, exc.detail)
    return (
        checked.decisions,
        checked.item_ids,
        orjson.dumps(checked.kept, option=orjson.OPT_SERIALIZE_NUMPY),
        checked.hidden,
        checked.discreet,
    )


# Only where the Python loop runs on purpose: test_the_c_loop_is_built fails wherever it is missing by accident.
@pytest.mark.skipif(not ACCELERATED, reason="the Python loop runs on purpose: there is no C loop to compare")
@examples(150)
@given(data=st.data(), policy=policies(), annotate=st.booleans())
def test_c_and_python_loops_agree(data: st.DataObject, policy: Policy, annotate: bool) -> None:
    state = data.draw(states(policy))
    request = data.draw(request_signals(policy))
    page = data.draw(pages(policy))
    compiled = CompiledPolicy(policy)

    def context() -> UserContext:
        return UserContext(compiled, state, request or RequestSignals(), locale="en", now=NOW)

    c_ctx, python_ctx = context(), context()
    # Twice each: the first pass fills the memo through the engine, the second reads it.
    for _ in range(2):
        expected = outcome(check_items_python, python_ctx, copy.deepcopy(page), annotate)
        assert outcome(check_items, c_ctx, copy.deepcopy(page), annotate) == expected
