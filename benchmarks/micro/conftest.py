"""Fixtures for the micro-benchmarks: the demo policy, the benchmark's user and bodies, and the
markdown report written next to pytest-benchmark's JSON."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from apps import BENCH_CONTROLS, POLICY_PATH, recommendation_document

from guardrail.controls import validate_patch
from guardrail.engine import CompiledPolicy, UserContext
from guardrail.engine.context import NO_SIGNALS
from guardrail.explain.render import explanation
from guardrail.guard import Guard
from guardrail.policy.loading import load_policy
from guardrail.policy.models import Policy
from guardrail.routes import GuardedRoute
from guardrail.state import UserState

RESULTS = Path(__file__).resolve().parent.parent / "results"


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(POLICY_PATH)


@pytest.fixture(scope="session")
def guard(policy: Policy) -> Guard:
    return Guard(policy)


@pytest.fixture(scope="session")
def compiled(guard: Guard) -> CompiledPolicy:
    return guard.compiled


@pytest.fixture(scope="session")
def route(guard: Guard) -> GuardedRoute:
    found = guard.routes.match("/recommendations", "GET")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def state(policy: Policy) -> UserState:
    """The benchmark user's stored state: consent granted, nothing else changed."""
    now = datetime.now(UTC)
    return validate_patch(policy, BENCH_CONTROLS, now).apply(UserState(), now)


def new_context(compiled: CompiledPolicy, state: UserState) -> UserContext:
    """A user context as the guard builds it on a cache miss: its memo empty."""
    return UserContext(compiled, state, NO_SIGNALS, locale="en", now=datetime.now(UTC), explain=explanation)


@pytest.fixture
def ctx(compiled: CompiledPolicy, state: UserState) -> UserContext:
    return new_context(compiled, state)


def items(count: int) -> list[dict[str, Any]]:
    return list(recommendation_document(count)["items"])


def _row(bench: dict[str, Any]) -> str:
    stats, extra = bench["stats"], bench.get("extra_info", {})
    per_item = f"{stats['median'] / extra['items'] * 1e9:,.0f}" if extra.get("items") else ""
    return (
        f"| {bench['group'] or ''} | `{bench['name']}` | {stats['median'] * 1e6:,.2f} | {stats['min'] * 1e6:,.2f} "
        f"| {stats['mean'] * 1e6:,.2f} | {stats['stddev'] * 1e6:,.2f} | {per_item} | {stats['rounds']:,} |"
    )


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]) -> None:
    """Write benchmarks/results/micro.md from the JSON pytest-benchmark is about to save."""
    rows = sorted(output_json["benchmarks"], key=lambda b: (b["group"] or "", b["name"]))
    cpu = output_json["machine_info"].get("cpu", {})
    lines = [
        "# Micro-benchmarks: the parts of a guarded response, in process",
        "",
        "`python -m pytest benchmarks/micro --benchmark-only --benchmark-json=.benchmarks/micro.json`, "
        f"{output_json['datetime'][:19]}Z, Python {platform.python_version()}, {cpu.get('brand_raw', '')} "
        f"({cpu.get('count', '?')} cores, shared: other processes add noise, trust the min "
        "and median more than the mean).",
        "",
        "The demo policy (`config/guardrail.yaml`); the benchmark user (consent granted, nothing else changed); "
        "the bodies of `benchmarks/apps.py` (50 items have 14 distinct shapes, 200 have 15). *Warm*: the "
        "user context's memo already holds every shape, as for every request after a user's first one; "
        "*cold*: a new context (a cache miss or a changed user state), so every shape is decided afresh.",
        "",
        "| group | benchmark | median µs | min µs | mean µs | stddev µs | ns per item | rounds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(_row(bench) for bench in rows),
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "micro.md").write_text("\n".join(lines))
