"""The engine: one item (a memo hit, and decided afresh) and whole responses (warm and cold)."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from guardrail.engine import CompiledPolicy, UserContext, decide
from guardrail.engine.evaluate import memo_key
from guardrail.engine.loop import check_items
from guardrail.routes import GuardedRoute
from guardrail.state import UserState
from micro.conftest import items, new_context

TYPICAL = (["movies", "movies.action"], ["watch_history"])  # the most common shape of the bodies
SENSITIVE = (["health"], ["watch_history"])  # hidden: needs an opt-in


@pytest.mark.benchmark(group="engine: one item")
@pytest.mark.parametrize("shape", [TYPICAL, SENSITIVE], ids=["typical", "sensitive"])
def test_decide_warm(benchmark: BenchmarkFixture, ctx: UserContext, shape: tuple[list[str], list[str]]) -> None:
    decide(ctx, *shape)  # into the memo
    decision = benchmark(decide, ctx, *shape)
    assert decision is ctx.memo.data[memo_key(shape[0], shape[1], False, False)]


@pytest.mark.benchmark(group="engine: one item")
@pytest.mark.parametrize("shape", [TYPICAL, SENSITIVE], ids=["typical", "sensitive"])
def test_decide_cold(benchmark: BenchmarkFixture, ctx: UserContext, shape: tuple[list[str], list[str]]) -> None:
    memo = ctx.memo

    def decided_afresh() -> Any:
        memo.clear()
        return decide(ctx, *shape)

    decision = benchmark(decided_afresh)
    assert decision.hidden is (shape is SENSITIVE)


@pytest.mark.benchmark(group="engine: one response")
@pytest.mark.parametrize("count", [50, 200])
def test_check_items_warm(benchmark: BenchmarkFixture, ctx: UserContext, route: GuardedRoute, count: int) -> None:
    body = items(count)
    check_items(ctx, route.fields, body, route.default_signals, annotate=True)  # every shape into the memo
    benchmark.extra_info["items"] = count
    checked = benchmark(check_items, ctx, route, body, route.default_signals, annotate=True)
    assert len(checked.kept) + len(checked.hidden) == count


@pytest.mark.benchmark(group="engine: one response")
@pytest.mark.parametrize("count", [50, 200])
def test_check_items_cold(
    benchmark: BenchmarkFixture, compiled: CompiledPolicy, state: UserState, route: GuardedRoute, count: int
) -> None:
    """A new user context (its memo empty), then the whole body: what a cache miss costs the engine."""
    body = items(count)

    def cold() -> Any:
        return check_items(new_context(compiled, state), route.fields, body, route.default_signals, annotate=True)

    benchmark.extra_info["items"] = count
    checked = benchmark(cold)
    assert len(checked.kept) + len(checked.hidden) == count


@pytest.mark.benchmark(group="engine: one response")
def test_user_context(benchmark: BenchmarkFixture, compiled: CompiledPolicy, state: UserState) -> None:
    """Building the user context alone (part of every cold response above)."""
    ctx = benchmark(new_context, compiled, state)
    assert ctx.personalized_allowed
