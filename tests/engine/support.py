"""Building engine contexts in tests: the test policy, a fixed clock, a consented user."""

from __future__ import annotations

from datetime import UTC, datetime

from guardrail.engine import CompiledPolicy, RequestSignals, UserContext
from guardrail.explain.render import explanation
from guardrail.state import UserState
from tests.conftest import make_policy

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
COMPILED = CompiledPolicy(make_policy())
CONSENTED = UserState(consent={"personalization": "granted"})


def context(
    state: UserState | None = CONSENTED,
    *,
    gpc: bool = False,
    minor: bool = False,
    tcf: frozenset[tuple[str, bool]] | None = None,
    locale: str = "en",
    now: datetime = NOW,
    store_unavailable: bool = False,
    degraded: bool = False,
    compiled: CompiledPolicy = COMPILED,
) -> UserContext:
    return UserContext(
        compiled,
        state,
        RequestSignals(gpc=gpc, minor=minor, tcf=tcf),
        locale=locale,
        now=now,
        store_unavailable=store_unavailable,
        degraded=degraded,
        explain=explanation,
    )
