"""The reviewers' decisions in the policy story (docs/review.md): `guardrail explain --store` names the one
that decided, `guardrail diff --store` counts what they change, run as a user runs them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardrail.review import ReviewDecision, entry_id
from guardrail.store import create_store
from tests.authoring.test_commands import CONFIG, guardrail, recorded
from tests.store.redis_servers import RedisServer

DEMO = str(CONFIG / "guardrail.yaml")


@pytest.fixture(scope="module")
def decided_store() -> Iterator[str]:
    """A Redis with two decisions in force: `sportsbook` read as gambling, item `m9` blocked."""
    import asyncio

    async def decide(url: str) -> None:
        store = create_store(url)
        try:
            for decision in (
                ReviewDecision(
                    time.time(),
                    "staff-1",
                    entry_id("unknown_category", "sportsbook"),
                    "unknown_category",
                    "sportsbook",
                    "label",
                    "a bookmaker",
                    alias_of="gambling",
                ),
                ReviewDecision(
                    time.time(), "staff-2", entry_id("reported_item", "m9"), "reported_item", "m9", "block", "abusive"
                ),
            ):
                await store.review_queue().decide(decision)
        finally:
            await store.aclose()

    with RedisServer() as server:
        asyncio.run(decide(server.url))
        yield server.url


def test_explain_names_the_reviewer_who_blocked_the_item(decided_store: str) -> None:
    item = json.dumps({"id": "m9", "categories": ["movies"], "signals": []})
    run = guardrail("explain", "--policy", DEMO, "--store", decided_store, "--json", "-", stdin=item)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["action"], report["reasons"]) == ("hide", ["blocked_by_review"])
    assert report["review"][0]["reviewer"] == "staff-2" and report["review"][0]["note"] == "abusive"
    assert "checked it and blocked it" in report["text"]
    text = guardrail("explain", "--policy", DEMO, "--store", decided_store, "-", stdin=item)
    assert "review: reviewer staff-2 blocked item m9 for everyone" in text.stdout
    # Without the store, the policy file alone decides.
    alone = json.loads(guardrail("explain", "--policy", DEMO, "--json", "-", stdin=item).stdout)
    assert alone["action"] != "hide" and alone["review"] == []


def test_explain_says_how_a_reviewer_read_a_category(decided_store: str) -> None:
    item = json.dumps({"id": "s3", "categories": [" Sportsbook"], "signals": ["watch_history"]})
    run = guardrail("explain", "--policy", DEMO, "--store", decided_store, "--json", "-", stdin=item)
    report = json.loads(run.stdout)
    verdicts = {rule["rule"]: rule["verdict"] for rule in report["rules"]}
    assert verdicts["unknown_category"] == "passes"  # known now: it is gambling, a sensitive topic
    assert "gambling" in next(r["why"] for r in report["rules"] if r["rule"] == "sensitive_needs_opt_in")
    assert report["review"][0]["details"] == {"category": "sportsbook", "alias_of": "gambling"}
    assert "read sportsbook as gambling" in report["review"][0]["says"]


def test_diff_counts_what_the_reviewers_decisions_change(decided_store: str, tmp_path: Path) -> None:
    granted = {"consent": {"personalization": "granted"}}
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        "\n".join(
            [
                recorded(granted, {"id": "m9", "categories": ["movies"], "signals": ["watch_history"]}),
                recorded(granted, {"id": "m1", "categories": ["movies"], "signals": ["watch_history"]}),
            ]
        )
    )
    run = guardrail("diff", DEMO, DEMO, str(cases), "--store", decided_store, "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["changed"] == 1 and report["by_rule"] == {"blocked_by_review": 1}
    both = json.loads(
        guardrail("diff", DEMO, DEMO, str(cases), "--store", decided_store, "--overlay-on", "both", "--json").stdout
    )
    assert both["changed"] == 0


def test_a_memory_store_is_refused_with_what_to_do() -> None:
    run = guardrail("explain", "--policy", DEMO, "--store", "memory://", "-", stdin='{"id": 1}')
    assert run.returncode == 1 and "give redis://" in run.stderr and "Traceback" not in run.stderr
