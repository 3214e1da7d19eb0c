"""Explanation rendering (guardrail/explain/render.py): the sentence on a kept item, the notice."""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from guardrail.engine import Action, CompiledPolicy, ItemDecision, UserContext, decide
from guardrail.explain.render import Notices, _notice, explanation, receipt_text


@pytest.mark.benchmark(group="explain")
@pytest.mark.parametrize(
    ("action", "signals", "inferred"),
    [
        (Action.KEEP, ("watch_history",), False),
        (Action.KEEP, ("watch_history", "search_history"), True),
        (Action.DISCREET, ("watch_history",), False),
        (Action.KEEP, (), False),
    ],
    ids=["one-signal", "two-signals-inferred", "discreet", "popular"],
)
def test_explanation(
    benchmark: BenchmarkFixture, ctx: UserContext, action: Action, signals: tuple[str, ...], inferred: bool
) -> None:
    rendered = benchmark(explanation, ctx, action, signals, inferred)
    assert rendered["text"]


@pytest.fixture
def hidden(ctx: UserContext) -> list[ItemDecision]:
    """The three hidden items of the 50-item body: two health items and one on gambling."""
    return [
        decide(ctx, ["health"], ["watch_history"]),
        decide(ctx, ["gambling", "sports.soccer"], ["search_history"]),
    ] * 2


@pytest.mark.benchmark(group="explain")
def test_notice_rendered(benchmark: BenchmarkFixture, ctx: UserContext, hidden: list[ItemDecision]) -> None:
    """The summary sentence written afresh (the first response of a mix of hidden reasons)."""
    text = benchmark(_notice, ctx.compiled, ctx.locale, hidden)
    assert text is not None


@pytest.mark.benchmark(group="explain")
def test_notice_memoized(benchmark: BenchmarkFixture, ctx: UserContext, hidden: list[ItemDecision]) -> None:
    """The summary sentence as most responses get it: from the context's memo."""
    notice = Notices(ctx.compiled)
    notice(ctx.locale, hidden)
    text = benchmark(notice, ctx.locale, hidden)
    assert text is not None


@pytest.mark.benchmark(group="explain")
def test_receipt_text(benchmark: BenchmarkFixture, compiled: CompiledPolicy) -> None:
    """One item of a decision receipt (GET /guardrail/v1/decisions/{id})."""
    text = benchmark(receipt_text, compiled, "en", (), ("watch_history", "search_history"))
    assert "watched" in text
