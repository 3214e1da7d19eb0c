"""What operators get from human review (docs/review.md): the queue gauges on memory and Redis, and the
`guardrail review export` / `overlay` commands run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml
from prometheus_client import CollectorRegistry

from guardrail.metrics import metrics_for
from guardrail.review import ReviewDecision, Sighting
from guardrail.store import create_store
from tests.conftest import ROOT, script_env
from tests.store.redis_servers import RedisServer


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_the_gauges_count_entries_by_kind_and_the_oldest_wait(backend: str) -> None:
    registry = CollectorRegistry()
    with RedisServer() as server:
        store = create_store("memory://" if backend == "memory" else server.url, metrics=metrics_for(registry))
        try:
            queue = store.review_queue()
            assert registry.get_sample_value("guardrail_review_oldest_seconds") == 0
            an_hour_ago = time.time() - 3600
            queue.note(Sighting("unknown_category", "sportsbook", "/r", "i1", an_hour_ago))
            queue.note(Sighting("unknown_category", "crypto", "/r", "i2", time.time()))
            queue.note_report("/r", "i3", "offensive")
            await queue.flush()
            entries = {
                kind: registry.get_sample_value("guardrail_review_queue_entries", {"kind": kind})
                for kind in ("unknown_category", "reported_item", "flagged_item")
            }
            assert entries == {"unknown_category": 2, "reported_item": 1, "flagged_item": 0}
            waited = registry.get_sample_value("guardrail_review_oldest_seconds")
            assert waited is not None and 3600 <= waited < 3700
        finally:
            await store.aclose()


def guardrail(*args: str, store: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardrail.cli", "review", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**script_env(), "GUARDRAIL_STORE": store},
    )


async def test_export_writes_the_audit_as_json_lines_and_overlay_a_policy_fragment() -> None:
    with RedisServer() as server:
        store = create_store(server.url)
        decisions = [
            ReviewDecision(
                time.time(), "staff-1", "e1", "unknown_category", "sportsbook", "label", "a bookmaker", "gambling"
            ),
            ReviewDecision(time.time(), "staff-2", "e2", "reported_item", "m1", "block", "abusive"),
        ]
        try:
            for decision in decisions:
                await store.review_queue().decide(decision)
        finally:
            await store.aclose()
        export = guardrail("export", store=server.url)
        assert export.returncode == 0, export.stderr
        lines = [json.loads(line) for line in export.stdout.splitlines()]
        assert lines == [decision.to_json() for decision in decisions]
        overlay = guardrail("overlay", store=server.url)
        assert overlay.returncode == 0, overlay.stderr
        assert yaml.safe_load(overlay.stdout) == {
            "category_aliases": {"sportsbook": "gambling"},
            "blocked_items": ["m1"],
        }


def test_export_refuses_the_memory_store_saying_what_to_do() -> None:
    result = guardrail("export", store="memory://")
    assert result.returncode == 1
    assert "give --store redis://" in result.stderr and "Traceback" not in result.stderr
