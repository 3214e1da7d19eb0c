"""`guardrail test`: golden cases, run against a policy (docs/integrate.md, "Golden cases").

A case file is YAML: `policy:` (a path relative to the file) and `cases:`, each a scenario (guardrail/authoring/
scenario.py) with `name`, `items` and `expect: [{id, action, reasons?, text?}]`. `reasons` is compared as a set;
`text` is a substring of the kept item's explanation, or of the page's notice for a hidden item.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guardrail.authoring.scenario import Scenario, user_context
from guardrail.engine import BadItem, Reason, check_items
from guardrail.errors import InvalidControls, PolicyError
from guardrail.guard import Guard
from guardrail.policy.loading import key_path, load_policy


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | int
    action: Literal["keep", "discreet", "hide"]
    reasons: list[Reason] | None = None
    text: str | None = None


class Case(Scenario):
    name: str
    items: list[dict[str, Any]] = Field(min_length=1)
    expect: list[Expect] = Field(min_length=1)


class CaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str | None = None
    cases: list[Case] = Field(min_length=1)


class CaseError(Exception):
    """A case file that does not load: names the file, the case and the key."""


class Outcome(NamedTuple):
    file: str
    case: str
    failures: list[str]  # empty: passed
    reasons_seen: frozenset[Reason]


def case_files(paths: Sequence[str]) -> list[Path]:
    """The files to run: each file given, and every `*.yaml`/`*.yml` with `cases:` under each directory."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for candidate in sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]):
                if _has_cases(candidate):
                    found.append(candidate)
        elif path.exists():
            found.append(path)
        else:
            raise CaseError(f"{given}: no such file or directory")
    return found


def _has_cases(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True  # said when it is loaded, with the reason
    return isinstance(data, dict) and "cases" in data


def load_cases(path: Path) -> CaseFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"{path}: cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise CaseError(f"{path}: not valid YAML: {exc}") from None
    try:
        return CaseFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = error["loc"]
            where = key_path(loc)
            if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int) and isinstance(data, dict):
                cases = data.get("cases")
                if isinstance(cases, list) and loc[1] < len(cases) and isinstance(cases[loc[1]], dict):
                    where = f"case {cases[loc[1]].get('name', loc[1])!r}: {key_path(loc[2:]) or '(case)'}"
            lines.append(f"{path}: {where}: {error['msg']}")
        raise CaseError("\n".join(lines)) from None


def run_file(path: Path, policy_override: str | None = None) -> Iterator[Outcome]:
    cases = load_cases(path)
    policy_path = policy_override or (os.path.join(path.parent, cases.policy) if cases.policy is not None else None)
    if policy_path is None:
        raise CaseError(f"{path}: no policy: add `policy: FILE` (relative to the case file) or pass --policy")
    guard = Guard.for_scenarios(load_policy(policy_path))
    for case in cases.cases:
        yield run_case(guard, case, str(path))


def run_case(guard: Guard, case: Case, file: str) -> Outcome:
    try:
        ctx = user_context(guard, case)
        route = guard.route_named(case.route)
    except (InvalidControls, LookupError) as exc:
        return Outcome(file, case.name, [f"the case does not apply to the policy: {exc}"], frozenset())
    items = [dict(item) for item in case.items]
    try:
        checked = check_items(ctx, route.fields, items, route.default_signals, annotate=False)
    except BadItem as exc:
        return Outcome(file, case.name, [f"an item does not follow the item contract: {exc}"], frozenset())
    decisions = dict(zip(checked.item_ids, checked.decisions, strict=True))
    notice = (guard.notice(ctx.locale, checked.hidden, ctx.paused_until) if checked.hidden else None) or ""
    failures: list[str] = []
    for expected in case.expect:
        decision = decisions.get(expected.id)
        if decision is None:
            failures.append(f"item {expected.id!r}: not among the case's items")
            continue
        actual = f"{decision.action.value} {[r.value for r in decision.reasons]}"
        if decision.action.value != expected.action:
            failures.append(f"item {expected.id!r}: expected {expected.action}, got {actual}")
        if expected.reasons is not None and set(expected.reasons) != set(decision.reasons):
            wanted = sorted(r.value for r in expected.reasons)
            failures.append(f"item {expected.id!r}: expected reasons {wanted}, got {actual}")
        if expected.text is not None:
            text = notice if decision.hidden else (decision.explanation or {}).get("text", "")
            if expected.text not in text:
                failures.append(f"item {expected.id!r}: expected the text to contain {expected.text!r}, got {text!r}")
    seen = frozenset(reason for decision in checked.decisions for reason in decision.reasons)
    return Outcome(file, case.name, failures, seen)


def run(paths: Sequence[str], policy: str | None = None, out: Any = None) -> int:
    """Run every case; print failures, the tally and the reason codes no case exercised. 0 if all passed."""
    import sys

    out = out if out is not None else sys.stdout
    passed = failed = 0
    broken = False
    seen: set[Reason] = set()
    try:
        files = case_files(paths)
    except CaseError as exc:
        print(exc, file=out)
        return 1
    if not files:
        print(f"no case files (YAML with `cases:`) under {', '.join(paths)}", file=out)
        return 1
    for path in files:
        try:
            for outcome in run_file(path, policy):
                seen |= outcome.reasons_seen
                if outcome.failures:
                    failed += 1
                    print(f"FAIL {outcome.file}: {outcome.case}", file=out)
                    for failure in outcome.failures:
                        print(f"  {failure}", file=out)
                else:
                    passed += 1
        except (CaseError, PolicyError) as exc:
            broken = True
            print(f"ERROR {exc}", file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    unexercised = [reason.value for reason in Reason if reason not in seen]
    print(f"reason codes no case exercised: {', '.join(unexercised) if unexercised else 'none'}", file=out)
    return 1 if failed or broken else 0
