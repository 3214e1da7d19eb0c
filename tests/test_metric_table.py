"""docs/operations.md's table of every metric agrees with what `guardrail.metrics` registers, both ways: each
registered metric has one row with its type and labels, and each row names a registered metric. The only
rows allowed ahead of their metric are those in `NOT_YET_REGISTERED` (design §8 names them; another change
registers them). Once registered, such a row is checked like any other, so the list may stay until it is tidied."""

from __future__ import annotations

import re
from typing import NamedTuple

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from guardrail.metrics import Metrics
from tests.conftest import ROOT

OPERATIONS = ROOT / "docs" / "operations.md"
ALERTS = ROOT / "config" / "alerts.yml"
NOT_YET_REGISTERED: frozenset[str] = frozenset()  # every metric of design §8 is registered now


class Row(NamedTuple):
    kind: str
    labels: frozenset[str]
    alert_on: str


def exposed_name(family_name: str, kind: str) -> str:
    """The name a scrape shows for a family (counters get `_total`)."""
    return f"{family_name}_total" if kind == "counter" else family_name


def registered() -> dict[str, Row]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    found: dict[str, Row] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            (family,) = metric.describe()
            # The label names a metric was declared with: prometheus_client keeps them only here.
            found[exposed_name(family.name, family.type)] = Row(family.type, frozenset(metric._labelnames), "")
        elif Collector in type(metric).__mro__:
            # A collector read at scrape time (the review queue's gauges): its labels are its samples'.
            for family in metric.collect():
                labels = frozenset(name for sample in family.samples for name in sample.labels)
                found[exposed_name(family.name, family.type)] = Row(family.type, labels, "")
    # Whatever is on the registry is an attribute of `Metrics`, so nothing registered escapes the check.
    on_registry = {exposed_name(family.name, family.type) for family in registry.collect()}
    assert on_registry == set(found), on_registry ^ set(found)
    return found


def documented() -> dict[str, Row]:
    section = OPERATIONS.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, Row] = {}
    for line in section.splitlines():
        if not line.startswith("| `guardrail_"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 5, f"a row has metric | type | labels | meaning | alert on: {line}"
        name, kind, labels, meaning, alert_on = cells
        name = name.strip("`")
        assert name not in rows, f"{name} has two rows"
        assert meaning and alert_on, f"{name}: say what it means and what to alert on"
        rows[name] = Row(kind, frozenset(label.strip() for label in labels.split(",") if label.strip()), alert_on)
    return rows


def test_every_registered_metric_has_its_row() -> None:
    rows = documented()
    for name, metric in registered().items():
        assert name in rows, f"{name} is registered but has no row in docs/operations.md, Metrics"
        assert rows[name].kind == metric.kind, name
        assert rows[name].labels == metric.labels, name


def test_every_row_names_a_registered_metric() -> None:
    ahead = set(documented()) - set(registered())
    assert ahead <= NOT_YET_REGISTERED, f"rows for metrics nobody registers: {sorted(ahead - NOT_YET_REGISTERED)}"


def test_the_metrics_still_to_come_have_their_rows() -> None:
    rows = documented()
    assert [name for name in sorted(NOT_YET_REGISTERED) if name not in rows] == []


def test_the_alerts_a_row_names_exist() -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"][0]["rules"]
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    named: set[str] = set()
    for row in documented().values():
        named |= set(re.findall(r"\bGuardrail[A-Z]\w+", row.alert_on))
    assert named - alerts == set(), "the table names alerts that config/alerts.yml does not have"
    assert alerts - named == set(), "alerts that no metric's row mentions"
