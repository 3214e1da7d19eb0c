"""Reading a policy file: YAML → schema validation + cross-references → a frozen `Policy`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from guardrail.errors import PolicyError
from guardrail.policy.checks import Issue, cross_reference_issues
from guardrail.policy.models import Policy


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Load and validate a policy file; raise `PolicyError` listing every problem in it."""
    return parse_policy(read_policy_text(path), source=str(path))


def read_policy_text(path: str | os.PathLike[str]) -> str:
    """The text of a policy file, or a `PolicyError` saying why it cannot be read."""
    file = Path(path)
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(file), [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise PolicyError(str(file), [("", "the file is not UTF-8 text")]) from None


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(source, [("", f"not valid YAML: {where}{problem}")]) from None
    return policy_from_mapping(data, source=source)


def policy_from_mapping(data: Any, *, source: str = "<policy>") -> Policy:
    if not isinstance(data, Mapping):
        raise PolicyError(source, [("", "the policy must be a mapping of keys (version, policy_id, ...)")])
    issues: list[Issue] = []
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        issues.extend((_key_path(error["loc"]), _describe(error)) for error in exc.errors())
    issues.extend(cross_reference_issues(data))
    if issues or policy is None:
        raise PolicyError(source, issues)
    return policy


def _key_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _describe(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling"
    if kind == "literal_error":
        return f"got {error['input']!r}; allowed: {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return f"got {error['input']!r}, which does not match the pattern {ctx.get('pattern')}"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    # pydantic prefixes messages from our own validators with "Value error, ".
    return message.removeprefix("Value error, ") + (
        f" (got {error['input']!r})" if kind.endswith(("_type", "_parsing")) else ""
    )
