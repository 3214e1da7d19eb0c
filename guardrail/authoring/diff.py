"""`guardrail diff OLD NEW CASES.jsonl`: what a policy change does to recorded traffic, before it is live.

Each line of CASES.jsonl is one recorded request: `{"controls", "request", "route", "body"}` (the scenario of
guardrail/authoring/scenario.py, and the upstream's JSON body as it came). Both policies decide every item;
each item whose action changes is counted by route and by the rule that made the difference: the new deciding
reason when the new policy hides it, else the old one that no longer hides it, else `score` (a move between
keep and discreet).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from guardrail.authoring.scenario import Scenario, user_context
from guardrail.engine import BadItem, ItemDecision
from guardrail.errors import InvalidControls
from guardrail.guard import Guard
from guardrail.pointer import PointerError, resolve
from guardrail.policy.models import Policy
from guardrail.review import EMPTY_OVERLAY, Overlay

EXAMPLES_KEPT = 3


class Recorded(Scenario):
    body: Any


@dataclass
class Change:
    route: str
    rule: str
    old: str
    new: str
    item: Any


@dataclass
class DiffReport:
    requests: int = 0
    items: int = 0
    skipped: list[str] = field(default_factory=list)  # "line N: why"
    changes: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)  # (route, rule, old, new)
    examples: dict[tuple[str, str, str, str], list[Any]] = field(default_factory=lambda: defaultdict(list))

    def add(self, change: Change) -> None:
        key = (change.route, change.rule, change.old, change.new)
        self.changes[key] += 1
        if len(self.examples[key]) < EXAMPLES_KEPT:
            self.examples[key].append(change.item)

    def to_json(self) -> dict[str, Any]:
        by_rule: Counter[str] = Counter()
        by_route: Counter[str] = Counter()
        for (route, rule, _, _), count in self.changes.items():
            by_rule[rule] += count
            by_route[route] += count
        return {
            "requests": self.requests,
            "items": self.items,
            "changed": sum(self.changes.values()),
            "by_rule": dict(by_rule.most_common()),
            "by_route": dict(by_route.most_common()),
            "changes": [
                {
                    "route": r,
                    "rule": rule,
                    "from": old,
                    "to": new,
                    "count": n,
                    "examples": self.examples[(r, rule, old, new)],
                }
                for (r, rule, old, new), n in self.changes.most_common()
            ],
            "skipped": self.skipped,
        }


def read_cases(lines: Iterable[str]) -> Iterator[tuple[int, Recorded | str]]:
    """(line number, the recorded request or why it cannot be read)."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, Recorded.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            yield number, f"not JSON: {exc}"
        except ValidationError as exc:
            yield number, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def diff(
    old: Policy,
    new: Policy,
    lines: Iterable[str],
    *,
    old_overlay: Overlay = EMPTY_OVERLAY,
    new_overlay: Overlay = EMPTY_OVERLAY,
) -> DiffReport:
    """`old_overlay`, `new_overlay`: reviewers' decisions served with each policy (docs/review.md)."""
    report = DiffReport()
    guards = (Guard.for_scenarios(old, old_overlay), Guard.for_scenarios(new, new_overlay))
    for number, recorded in read_cases(lines):
        if isinstance(recorded, str):
            report.skipped.append(f"line {number}: {recorded}")
            continue
        try:
            before, route, ids = _decide(guards[0], recorded)
            after, _, _ = _decide(guards[1], recorded)
        except (InvalidControls, LookupError, PointerError, BadItem, ValueError) as exc:
            report.skipped.append(f"line {number}: {exc}")
            continue
        report.requests += 1
        report.items += len(ids)
        for item_id, was, now in zip(ids, before, after, strict=True):
            if was.action is not now.action:
                report.add(Change(route, _rule(was, now), was.action.value, now.action.value, item_id))
    return report


def _decide(guard: Guard, recorded: Recorded) -> tuple[list[ItemDecision], str, list[Any]]:
    route = guard.route_named(recorded.route)
    _, _, items = resolve(recorded.body, route.pointer)
    if type(items) is not list:
        raise ValueError(f"the items pointer names a {type(items).__name__}, not a list")
    ctx = user_context(guard, recorded)
    checked = guard.check(ctx, route.fields, [dict(item) for item in items], route.default_signals, annotate=False)
    return checked.decisions, route.template, checked.item_ids


def _rule(was: ItemDecision, now: ItemDecision) -> str:
    if now.reasons:
        return now.reasons[0].value
    if was.reasons:
        return was.reasons[0].value
    return "score"


def render(report: DiffReport) -> str:
    data = report.to_json()
    lines = [f"{data['requests']} requests, {data['items']} items: {data['changed']} change action"]
    if data["by_rule"]:
        lines.append("by rule:  " + ", ".join(f"{rule} {n}" for rule, n in data["by_rule"].items()))
        lines.append("by route: " + ", ".join(f"{route} {n}" for route, n in data["by_route"].items()))
    for change in data["changes"]:
        shown = ", ".join(json.dumps(example) for example in change["examples"])
        lines.append(
            f"  {change['count']:>6}  {change['route']}  {change['from']} -> {change['to']}  ({change['rule']})"
            f"  e.g. {shown}"
        )
    for skipped in data["skipped"]:
        lines.append(f"skipped {skipped}")
    return "\n".join(lines)
