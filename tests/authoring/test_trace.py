"""`guardrail explain`'s trace is what the engine computed: over generated policies, users, requests and items,
its action and reasons equal `decide`'s, and its score parts add up to the score."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from guardrail.engine import CompiledPolicy, UserContext, decide
from guardrail.engine.trace import HIDES, trace
from guardrail.explain.render import explanation
from tests.engine.support import NOW
from tests.strategies import examples, items, policies, request_signals, states

CONDITIONS = st.sampled_from([(False, False), (True, False), (True, True)])


@examples(60)
@given(st.data(), CONDITIONS)
def test_the_trace_decides_as_the_engine_does(data: st.DataObject, condition: tuple[bool, bool]) -> None:
    policy = data.draw(policies())
    compiled = CompiledPolicy(policy)
    degraded, unavailable = condition
    ctx = UserContext(
        compiled,
        data.draw(states(policy)),
        data.draw(request_signals(policy)),
        locale="en",
        now=NOW,
        degraded=degraded,
        store_unavailable=unavailable,
        explain=explanation,
    )
    for item in data.draw(items(policy)):
        categories, signals = item.get("categories", []), item.get("signals") or []
        age, inferred = item.get("signal_age_seconds"), item.get("inferred", False)
        decided = decide(ctx, categories, signals, age, inferred)
        traced = trace(ctx, categories, signals, age, inferred)
        assert (traced.action, traced.reasons, traced.score) == (decided.action, decided.reasons, decided.score)
        assert {rule.rule for rule in traced.rules if rule.verdict == HIDES} == set(decided.reasons)
        if signals:
            assert min(sum(traced.score_parts.values()), 100) == traced.score
