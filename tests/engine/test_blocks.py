"""Items a reviewer blocked (guardrail/engine/blocks.py): hidden after either per-item loop, the same way."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from guardrail.engine import CompiledPolicy, Reason
from guardrail.engine.blocks import block_items
from guardrail.engine.loop import check_items, check_items_python
from guardrail.routes import RouteTable
from guardrail.speedups import ACCELERATED
from guardrail.state import UserState
from tests.conftest import make_policy
from tests.engine.support import CONSENTED, context

COMPILED = CompiledPolicy(make_policy(blocked_items=["b1", "7"]))
PAGE: list[dict[str, Any]] = [
    {"id": "m1", "categories": ["movies"], "signals": ["watch_history"]},
    {"id": "b1", "categories": ["movies"], "signals": ["watch_history"]},  # blocked, else kept
    {"id": 7, "categories": ["sports"], "signals": ["watch_history"]},  # blocked, else hidden (muted)
    {"id": "s1", "categories": ["sports"], "signals": []},
]
LOOPS = (check_items_python, check_items) if ACCELERATED else (check_items_python,)


@pytest.mark.parametrize("loop", LOOPS)
def test_blocked_items_are_hidden_with_that_reason_alone(loop: Any) -> None:
    ctx = context(UserState(consent=CONSENTED.consent, muted={"sports": None}), compiled=COMPILED)
    route = RouteTable(COMPILED.policy.routes).match("/recommendations", "GET")
    assert route is not None
    page = copy.deepcopy(PAGE)
    checked = block_items(loop(ctx, route.fields, page, route.default_signals, annotate=True), page, COMPILED.blocked)
    assert [item["id"] for item in checked.kept] == ["m1"]
    assert [d.reasons for d in checked.decisions] == [
        (),
        (Reason.BLOCKED_BY_REVIEW,),
        (Reason.BLOCKED_BY_REVIEW,),
        (Reason.TOPIC_MUTED,),
    ]
    assert checked.hidden_by_kind == {(Reason.BLOCKED_BY_REVIEW, None): 2, (Reason.TOPIC_MUTED, "sports"): 1}
    assert "explanation" not in page[1]  # nothing of a blocked item goes out
    assert checked.distinct is None and checked.per_item is None  # records keep each decision as it is


def test_a_page_without_blocked_items_is_left_as_it_is() -> None:
    ctx = context(compiled=COMPILED)
    route = RouteTable(COMPILED.policy.routes).match("/recommendations", "GET")
    assert route is not None
    page = [PAGE[0], PAGE[3]]
    checked = check_items(ctx, route.fields, page, route.default_signals, annotate=False)
    assert block_items(checked, page, COMPILED.blocked) is checked
