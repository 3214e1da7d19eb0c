"""The alert rules, their promtool unit tests, the runbook and the dashboard agree with each other and with
the metrics the guardrail really exports; `guardrail alerts` builds every runbook link from one base URL.
Needs `promtool` (Debian package `prometheus`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from guardrail import GuardrailMiddleware
from guardrail.alerts import DEFAULT_RUNBOOK_BASE
from guardrail.metrics import Metrics
from tests.conftest import ROOT, make_policy
from tests.upstream import Upstream

ALERTS = ROOT / "config" / "alerts.yml"
ALERT_TESTS = ROOT / "config" / "alerts.test.yml"
DASHBOARD = ROOT / "config" / "grafana-dashboard.json"
RUNBOOK = ROOT / "docs" / "operations.md"  # its "Runbook" section, one "### <alert>" heading per alert

EXPECTED_ALERTS = {
    "GuardrailDegradedResponses",
    "GuardrailStoreErrors",
    "GuardrailOverheadOverBudget",
    "GuardrailHiddenRateUnusual",
    "GuardrailPolicyReloadFailed",
    "GuardrailDecisionRecordsDropped",
    "GuardrailUpstreamErrors",
    "GuardrailTargetDown",
    "GuardrailMetricsAbsent",
    "GuardrailReviewQueueWaiting",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: install it with `apt-get install -y prometheus` (Debian package)")
    return path


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin.decode() if stdin is not None else None, capture_output=True, text=True, check=False
    )


def show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def alert_rules(text: str | None = None) -> list[dict[str, Any]]:
    data = yaml.safe_load(text if text is not None else ALERTS.read_text())
    groups = data["groups"]
    assert [group["name"] for group in groups] == ["guardrail"]
    return [rule for rule in groups[0]["rules"] if "alert" in rule]


def exported_names() -> set[str]:
    """Every series name the guardrail's metrics expose, with the suffixes Prometheus adds."""
    registry = CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def referenced_names(expr: str) -> set[str]:
    return set(re.findall(r"\bguardrail_[a-z0-9_]+\b", expr))


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# -- promtool ------------------------------------------------------------------------------------


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, show(result)


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, show(result)
    assert "SUCCESS" in result.stdout, show(result)


async def test_a_real_exposition_passes_promtool_check_metrics(promtool: str) -> None:
    registry = CollectorRegistry()
    middleware = GuardrailMiddleware(Upstream(), policy=make_policy(), registry=registry)
    transport = httpx.ASGITransport(app=middleware, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/recommendations", headers={"x-user-id": "alice"})
    assert response.status_code == 200, response.text
    exposition = generate_latest(registry)
    assert b'guardrail_requests_total{outcome="enforced",route="/recommendations"} 1.0' in exposition
    result = run(promtool, "check", "metrics", stdin=exposition)
    assert result.returncode == 0, show(result)
    # Lint problems (missing help, bad suffixes…) exit non-zero and are printed: on stderr by promtool 2.42,
    # on stdout by some other versions. Neither may say anything.
    assert result.stdout.strip() == "" and result.stderr.strip() == "", show(result)


# -- the rules -----------------------------------------------------------------------------------


def test_every_alert_is_complete() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        name = rule["alert"]
        assert "for" in rule, name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        assert annotations["runbook_url"] == f"{DEFAULT_RUNBOOK_BASE}#{name.lower()}", name


def test_rules_reference_only_exported_metrics() -> None:
    names = exported_names()
    for rule in alert_rules():
        used = referenced_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= names, (rule["alert"], used - names)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = check["exp_alerts"]
            (fired if expected else quiet).add(check["alertname"])
            for alert in expected:
                assert "severity" in alert["exp_labels"], case["name"]
                assert "summary" in alert["exp_annotations"], case["name"]
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - fired == set(), "alerts without a test that fires them"
    assert alerts - quiet == set(), "alerts without a test where they stay quiet"


def test_every_alert_has_a_runbook_section() -> None:
    runbook = RUNBOOK.read_text().split("\n## Runbook\n", 1)[1].split("\n## ", 1)[0]
    anchors = {slug(line[4:]) for line in runbook.splitlines() if line.startswith("### ")}
    assert DEFAULT_RUNBOOK_BASE.endswith("/blob/main/" + str(RUNBOOK.relative_to(ROOT)))
    for rule in alert_rules():
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == DEFAULT_RUNBOOK_BASE, rule["alert"]
        assert anchor in anchors, (rule["alert"], anchor)


# -- `guardrail alerts`: the rules with their runbook links built from one base URL -----------------


def guardrail_alerts(*args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "guardrail.cli", "alerts", *args)


def test_the_rules_file_is_what_guardrail_alerts_prints_by_default() -> None:
    printed = guardrail_alerts()
    assert printed.returncode == 0, show(printed)
    assert printed.stdout == ALERTS.read_text(), "config/alerts.yml drifted: run `guardrail alerts > config/alerts.yml`"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://wiki.example.com/sre/guardrail", "https://wiki.example.com/sre/guardrail#{name}"),
        ("https://runbooks.example.com/guardrail/{alert}.html", "https://runbooks.example.com/guardrail/{name}.html"),
    ],
)
def test_every_runbook_link_is_built_from_the_base_given(
    promtool: str, tmp_path: Path, base: str, expected: str
) -> None:
    printed = guardrail_alerts("--runbook-base", base)
    assert printed.returncode == 0, show(printed)
    rules = alert_rules(printed.stdout)
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["annotations"]["runbook_url"] == expected.format(name=rule["alert"].lower()), rule["alert"]
    # Nothing else changed: the same rules, and promtool still accepts them.
    assert [{**rule, "annotations": {**rule["annotations"], "runbook_url": ""}} for rule in rules] == [
        {**rule, "annotations": {**rule["annotations"], "runbook_url": ""}} for rule in alert_rules()
    ]
    path = tmp_path / "alerts.yml"
    path.write_text(printed.stdout)
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, show(result)


@pytest.mark.parametrize(
    ("base", "says"),
    [
        ("wiki.example.com/runbook", "is not an http:// or https:// URL"),
        ('https://wiki.example.com/a"b', "percent-encode it"),
        ("https://wiki.example.com/{{ $labels.job }}", "percent-encode it"),
        ("https://wiki.example.com/runbook#top", "already has a #fragment"),
    ],
)
def test_a_base_the_links_cannot_be_built_from_is_refused_saying_why(base: str, says: str) -> None:
    printed = guardrail_alerts("--runbook-base", base)
    assert printed.returncode == 2
    assert printed.stdout == ""
    assert says in printed.stderr and "Traceback" not in printed.stderr, show(printed)


# -- the dashboard -------------------------------------------------------------------------------


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 12
    return exprs


def test_dashboard_queries_reference_only_exported_metrics() -> None:
    names = exported_names()
    covered: set[str] = set()
    for expr in dashboard_exprs():
        used = referenced_names(expr)
        assert used, expr
        assert used <= names, (expr, used - names)
        covered |= used
    # Every metric family is on the dashboard (histograms through their buckets).
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in names}
    assert families <= {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in covered}


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """promtool has no query parser of its own: the queries go in as recording rules."""
    variables = {"$__rate_interval": "5m", "$__interval": "1m", "$route": ".*"}
    rules = []
    for index, expr in enumerate(dashboard_exprs()):
        for variable, value in variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, show(result)
