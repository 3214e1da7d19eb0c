"""The policy-authoring verbs as a user runs them: `guardrail test`, `explain` and `schema` in a subprocess, on
real files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from tests.conftest import ROOT

CONFIG = ROOT / "config"
POLICIES = [CONFIG / "guardrail.yaml", *sorted((CONFIG / "examples").glob("*.yaml"))]


def guardrail(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardrail.cli", *args], capture_output=True, text=True, input=stdin, timeout=60
    )


# -- guardrail test --------------------------------------------------------------------------------


def test_the_shipped_golden_cases_pass() -> None:
    run = guardrail("test", str(CONFIG / "cases"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert " passed, 0 failed" in run.stdout
    passed = int(run.stdout.split(" passed")[0].split()[-1])
    assert passed >= 3 * 5  # the demo's and both examples'
    assert "reason codes no case exercised:" in run.stdout


def test_a_failing_case_shows_expected_and_actual(tmp_path: Path) -> None:
    cases = {
        "policy": str(CONFIG / "guardrail.yaml"),
        "cases": [
            {
                "name": "wrong on purpose",
                "items": [{"id": "m1", "categories": ["movies"], "signals": ["watch_history"]}],
                "expect": [{"id": "m1", "action": "keep", "reasons": []}],
            }
        ],
    }
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(cases))
    run = guardrail("test", str(tmp_path))
    assert run.returncode == 1
    assert "FAIL" in run.stdout and "wrong on purpose" in run.stdout
    assert "expected keep, got hide ['no_consent']" in run.stdout
    assert "0 passed, 1 failed" in run.stdout


def test_a_case_file_that_does_not_load_names_the_file_case_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "policy: " + str(CONFIG / "guardrail.yaml") + "\ncases:\n  - name: typo\n    items: [{id: 1}]\n"
        "    expect: [{id: 1, acton: keep}]\n"
    )
    run = guardrail("test", str(bad))
    assert run.returncode == 1
    assert str(bad) in run.stdout and "'typo'" in run.stdout and "acton" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_a_case_against_a_broken_policy_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("version: 1\npolicy_id: x\n")
    (tmp_path / "cases.yaml").write_text(
        "policy: policy.yaml\ncases:\n  - {name: n, items: [{id: 1}], expect: [{id: 1, action: keep}]}\n"
    )
    run = guardrail("test", str(tmp_path))
    assert run.returncode == 1
    assert "policy.yaml" in run.stdout and "purposes" in run.stdout


# -- guardrail explain -----------------------------------------------------------------------------


def test_explain_shows_every_rule_the_score_and_the_text(tmp_path: Path) -> None:
    controls = tmp_path / "controls.json"
    controls.write_text(json.dumps({"consent": {"personalization": "granted"}, "sensitive": {"health": True}}))
    item = json.dumps({"id": "h1", "categories": ["health"], "signals": ["watch_history"], "signal_age_seconds": 5})
    run = guardrail("explain", "--policy", str(CONFIG / "guardrail.yaml"), "--controls", str(controls), "-", stdin=item)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    rules = [line.split()[1] for line in lines if line.startswith(("  passes", "  HIDES"))]
    assert rules[0] == "minor_protection" and rules[-1] == "blocked_by_review" and len(rules) == 12
    assert any("HIDES" in line and "too_invasive" in line and "score 80 >= hide_at 70" in line for line in lines)
    assert "sensitive_category 50 + signal_sensitivity 10 + fresh_activity 20" in run.stdout
    assert "action: hide   reasons: too_invasive" in run.stdout


def test_explain_json_has_the_documented_fields_and_speaks_the_chosen_language() -> None:
    item = json.dumps({"id": "m1", "categories": ["movies"], "signals": ["watch_history"]})
    run = guardrail("explain", "--policy", str(CONFIG / "guardrail.yaml"), "--locale", "ko", "--json", "-", stdin=item)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert {"action", "reasons", "score", "score_parts", "rules", "text"} <= set(report)
    assert report["action"] == "hide" and report["reasons"] == ["no_consent"]
    assert report["locale"] == "ko" and report["text"] != "" and report["text"].isascii() is False


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--controls", "/nonexistent.json"], '{"id": 1}', "nonexistent"),
        ([], "[1, 2]", "ITEM must be a JSON object"),
        ([], "not json", "is not JSON"),
        (["--route", "/nope"], '{"id": 1}', "no route '/nope'"),
        (["--locale", "fr"], '{"id": 1}', "not one of the policy's locales"),
    ],
)
def test_explain_names_bad_input(args: list[str], stdin: str, message: str) -> None:
    run = guardrail("explain", "--policy", str(CONFIG / "guardrail.yaml"), *args, "-", stdin=stdin)
    assert run.returncode == 1
    assert message in run.stderr and "Traceback" not in run.stderr


# -- guardrail schema ------------------------------------------------------------------------------


def test_the_shipped_schema_is_what_the_command_prints() -> None:
    run = guardrail("schema")
    assert run.returncode == 0
    assert run.stdout == (CONFIG / "guardrail.schema.json").read_text(encoding="utf-8"), (
        "config/guardrail.schema.json is stale: run `guardrail schema > config/guardrail.schema.json`"
    )


@pytest.mark.parametrize("policy", POLICIES, ids=[p.name for p in POLICIES])
def test_every_shipped_policy_validates_against_the_schema_and_points_editors_at_it(policy: Path) -> None:
    schema = json.loads((CONFIG / "guardrail.schema.json").read_text(encoding="utf-8"))
    text = policy.read_text(encoding="utf-8")
    jsonschema.validate(yaml.safe_load(text), schema)
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=") and first.endswith("guardrail.schema.json")


def test_the_schema_refuses_what_the_policy_refuses() -> None:
    schema = json.loads((CONFIG / "guardrail.schema.json").read_text(encoding="utf-8"))
    policy = yaml.safe_load((CONFIG / "guardrail.yaml").read_text(encoding="utf-8"))
    policy["mode"] = "enforcing"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(policy, schema)


# -- guardrail diff --------------------------------------------------------------------------------


def recorded(controls: Mapping[str, object] | None, *items: Mapping[str, object]) -> str:
    return json.dumps({"controls": controls, "route": "/recommendations", "body": {"items": list(items)}})


def test_diff_counts_the_items_a_change_moves_by_rule_and_route(tmp_path: Path) -> None:
    demo = (CONFIG / "guardrail.yaml").read_text(encoding="utf-8")
    new = tmp_path / "new.yaml"
    # Stricter: lower thresholds, and fitness becomes sensitive.
    new.write_text(
        demo.replace("hide_at: 70", "hide_at: 30")
        .replace("discreet_at: 30", "discreet_at: 20")
        .replace(
            "fitness: {label: {en: fitness, ko: 운동}}", "fitness: {sensitive: true, label: {en: fitness, ko: 운동}}"
        )
    )
    granted = {"consent": {"personalization": "granted"}}
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        "\n".join(
            [
                recorded(granted, {"id": "f1", "categories": ["fitness"], "signals": ["watch_history"]}),
                recorded(granted, {"id": "m1", "categories": ["movies"], "signals": ["location_precise"]}),
                recorded(granted, {"id": "m2", "categories": ["movies"], "signals": ["watch_history"]}),
                recorded(None, {"id": "p1", "categories": ["fitness"], "signals": []}),
                "{not json",
            ]
        )
    )
    run = guardrail("diff", str(CONFIG / "guardrail.yaml"), str(new), str(cases), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["requests"], report["items"], report["changed"]) == (4, 4, 3)
    assert report["by_rule"] == {"sensitive_needs_opt_in": 1, "too_invasive": 1, "score": 1}
    assert report["by_route"] == {"/recommendations": 3}
    moves = {(c["rule"], c["from"], c["to"]): c["examples"] for c in report["changes"]}
    assert moves[("sensitive_needs_opt_in", "keep", "hide")] == ["f1"]
    assert moves[("too_invasive", "discreet", "hide")] == ["m1"]
    assert moves[("score", "keep", "discreet")] == ["p1"]  # now sensitive: shown discreetly, not hidden
    assert len(report["skipped"]) == 1 and report["skipped"][0].startswith("line 5:")

    text = guardrail("diff", str(CONFIG / "guardrail.yaml"), str(new), str(cases))
    assert "4 requests, 4 items: 3 change action" in text.stdout
    assert "keep -> hide  (sensitive_needs_opt_in)" in text.stdout


def test_diff_refuses_a_policy_that_does_not_load(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 2\n")
    run = guardrail("diff", str(CONFIG / "guardrail.yaml"), str(broken), "-", stdin="")
    assert run.returncode == 1
    assert "broken.yaml" in run.stderr and "version" in run.stderr and "Traceback" not in run.stderr


def test_explain_takes_controls_saved_from_the_api(tmp_path: Path) -> None:
    """A file saved from GET /v1/controls, read-only keys and all, is the controls it shows."""
    saved = {
        "user": "alice",
        "personalization": True,
        "consent": {"personalization": "granted"},
        "signals": {},
        "muted": {"movies": {"until": None}},
        "sensitive": {},
        "locale": None,
        "revision": 3,
        "updated_at": "2026-12-01T12:00:00Z",
    }
    controls = tmp_path / "controls.json"
    controls.write_text(json.dumps(saved))
    item = json.dumps({"id": "m1", "categories": ["movies"], "signals": ["watch_history"]})
    run = guardrail("explain", "--policy", str(CONFIG / "guardrail.yaml"), "--controls", str(controls), "-", stdin=item)
    assert run.returncode == 0, run.stderr
    assert "action: hide   reasons: topic_muted" in run.stdout
