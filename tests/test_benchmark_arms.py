"""The benchmark suite compares like with like: its naive and Rego arms decide as the guardrail does.

benchmarks/suite.py puts the guardrail side by side with the same checks written the naive way and
the same policy in Rego. Its numbers mean something only if all three hide the same items and
explain the kept ones alike, on the benchmark's own bodies; and the suite must start. No load here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from apps import BENCH_CONTROLS, POLICY_PATH, recommendation_document  # noqa: E402
from arms_check import decisions_by_arm  # noqa: E402
from peers.naive import decide as naive_decide  # noqa: E402
from peers.policy_data import policy_data, user_data  # noqa: E402
from peers.rego import RegoPolicy  # noqa: E402

from guardrail.controls import validate_patch  # noqa: E402
from guardrail.engine import UserContext, decide  # noqa: E402
from guardrail.engine.context import NO_SIGNALS  # noqa: E402
from guardrail.explain.render import explanation  # noqa: E402
from guardrail.guard import Guard  # noqa: E402
from guardrail.policy.loading import load_policy  # noqa: E402
from guardrail.state import UserState  # noqa: E402
from tests.conftest import script_env  # noqa: E402
from tests.store.redis_servers import RedisServer  # noqa: E402

SNOOZE_END = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
# The benchmark user's controls, and a user who uses every control the peers implement.
CONTROLS = {
    "benchmark user": BENCH_CONTROLS,
    "every control": {
        "consent": {"personalization": "granted"},
        "muted": {"movies.comedy": {"until": None}, "music": {"until": SNOOZE_END}},
        "sensitive": {"health": True},
        "signals": {"search_history": False},
    },
}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.mark.parametrize("size", [50, 200])
@pytest.mark.parametrize("who", list(CONTROLS))
async def test_the_arms_keep_hide_and_explain_the_same_items(redis_url: str, size: int, who: str) -> None:
    answers = await decisions_by_arm(size, redis_url, CONTROLS[who])

    guardrail = answers["guardrail"]
    assert guardrail.kept, "the benchmark must show items, not an empty page"
    assert guardrail.hidden, "the benchmark must exercise hiding too"
    for name in ("redis", "naive", "rego"):
        assert answers[name].kept == guardrail.kept, name
        assert answers[name].hidden == guardrail.hidden, name
        assert without_decision(answers[name].explanations) == without_decision(guardrail.explanations), name


def without_decision(explanations: dict[str, Any]) -> dict[str, Any]:
    """The explanations with the decision id of each `why` link blanked: every arm makes its own."""
    return {
        key: {**value, "why": re.sub(r"/why/[^/]+/", "/why/-/", value["why"])} if "why" in value else value
        for key, value in explanations.items()
    }


@pytest.mark.parametrize("size", [50, 200])
@pytest.mark.parametrize("who", list(CONTROLS))
def test_the_peers_give_each_item_the_guardrails_action_and_reasons(size: int, who: str) -> None:
    policy = load_policy(POLICY_PATH)
    now = datetime.now(UTC)
    state = validate_patch(policy, CONTROLS[who], now).apply(UserState(), now)
    ctx = UserContext(Guard(policy).compiled, state, NO_SIGNALS, locale="en", now=now, explain=explanation)
    items: list[dict[str, Any]] = recommendation_document(size)["items"]
    user = user_data(CONTROLS[who])
    rules = policy_data(policy)

    expected = []
    for item in items:
        decision = decide(ctx, item["categories"], item["signals"], item.get("signal_age_seconds"))
        expected.append((decision.action.value, sorted(reason.value for reason in decision.reasons)))
    naive = [(d["action"], d["reasons"]) for d in (naive_decide(rules, user, item, time.time()) for item in items)]
    rego = [(d["action"], sorted(d["reasons"])) for d in RegoPolicy(policy).decide(orjson.dumps(user), items)]

    assert {action for action, _ in expected} == {"keep", "discreet", "hide"}
    assert naive == expected
    assert rego == expected


def test_the_suite_explains_itself() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "suite.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=script_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout
    assert "--dry-run" in done.stdout


def test_a_dry_run_builds_every_arm_and_finds_them_agreeing() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "suite.py"), "--dry-run", "--sizes", "50"],
        capture_output=True,
        text=True,
        timeout=300,
        env=script_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for arm in ("guardrail", "redis", "naive", "rego"):
        assert f"50 items, {arm:>9}: kept 47, hidden 3" in done.stdout
    assert "estimated duration" in done.stdout
