"""The policy files and the demo catalog that ship with guardrail are valid and fit together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guardrail.engine.compiled import is_sensitive_category
from guardrail.policy.loading import load_policy

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
DEMO_POLICY = CONFIG / "guardrail.yaml"
CATALOG = ROOT / "guardrail" / "demo" / "catalog.json"

# Every policy shipped: YAML under config/ but the golden cases (config/cases/, run by `guardrail test`).
SHIPPED = sorted(path for path in CONFIG.glob("**/*.yaml") if path.parent.name != "cases")


def _catalog_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(CATALOG.read_text(encoding="utf-8"))["items"]
    return items


def test_the_demo_policy_and_examples_are_found() -> None:
    names = {path.relative_to(CONFIG).as_posix() for path in SHIPPED}
    assert {"guardrail.yaml", "examples/video-streaming.yaml", "examples/retail-shop.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.relative_to(CONFIG).as_posix())
def test_shipped_policy_loads(path: Path) -> None:
    # A PolicyError here lists every problem with its key path.
    policy = load_policy(path)
    assert policy.routes


def test_shipped_policies_have_distinct_ids() -> None:
    ids = [load_policy(path).policy_id for path in SHIPPED]
    assert len(ids) == len(set(ids))


def test_demo_policy_is_the_documented_one() -> None:
    policy = load_policy(DEMO_POLICY)
    assert policy.policy_id == "demo-2026-11"
    assert policy.mode == "enforce"
    assert policy.fail_mode == "closed"
    assert any(purpose.follows_gpc for purpose in policy.purposes.values())
    assert any(signal.sale_or_share for signal in policy.signals.values())


def test_every_catalog_category_is_defined_in_the_demo_policy() -> None:
    policy = load_policy(DEMO_POLICY)
    used = {category for item in _catalog_items() for category in item["categories"]}
    assert used - set(policy.categories) == set()


def test_catalog_ids_are_unique() -> None:
    ids = [item["id"] for item in _catalog_items()]
    assert len(ids) == len(set(ids))


def test_catalog_is_large_enough_and_has_sensitive_items() -> None:
    policy = load_policy(DEMO_POLICY)
    items = _catalog_items()
    sensitive = [
        item for item in items if any(is_sensitive_category(policy, category) for category in item["categories"])
    ]
    assert len(items) >= 60
    assert len(sensitive) >= 10
