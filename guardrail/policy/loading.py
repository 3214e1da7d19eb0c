"""Reading a policy file: YAML → schema validation + cross-references → a frozen `Policy`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
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


# libyaml's parser when PyYAML has it (its wheels do): a reload then takes about 3 ms instead of 35,
# time a worker's event loop cannot serve requests. Same nodes, same errors, same safe constructors.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    try:
        node, data = _read_yaml(text, _SafeLoader)
    except (yaml.YAMLError, RecursionError):
        node, data = _read_yaml_or_explain(text, source)  # PyYAML's own parser says more about what is wrong
    duplicates = list(_duplicate_keys(node))
    try:
        policy = policy_from_mapping(data, source=source)
    except PolicyError as exc:
        raise PolicyError(source, [*duplicates, *exc.issues]) from None
    if duplicates:
        raise PolicyError(source, duplicates)
    return policy


def _read_yaml(text: str, loader_class: type[yaml.SafeLoader]) -> tuple[yaml.Node | None, Any]:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def _read_yaml_or_explain(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    try:
        return _read_yaml(text, yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(source, [("", f"not valid YAML: {where}{problem}")]) from None
    except RecursionError:
        # PyYAML reads nested collections recursively.
        raise PolicyError(source, [("", "not valid YAML: collections nested too deeply")]) from None


def _duplicate_keys(node: yaml.Node | None, path: str = "", seen: set[int] | None = None) -> Iterator[Issue]:
    """Keys written twice in one mapping. YAML forbids them, but PyYAML keeps the last one silently:
    a second `hide_at:` or `gambling:` further down would quietly replace the first."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:  # an alias is checked where its anchor is
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            child = path
            if isinstance(key, yaml.ScalarNode):
                child = f"{path}.{key.value}" if path else key.value
                line, first = key.start_mark.line + 1, lines.get((key.tag, key.value))
                if first is None:
                    lines[key.tag, key.value] = line
                elif key.value != "<<":  # merge keys (`<<: *defaults`) may repeat
                    yield child, f"written twice (lines {first} and {line}); YAML keeps only the last one, remove one"
            yield from _duplicate_keys(value, child, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{index}]", seen)


def policy_from_mapping(data: Any, *, source: str = "<policy>") -> Policy:
    if not isinstance(data, Mapping):
        raise PolicyError(source, [("", "the policy must be a mapping of keys (version, policy_id, ...)")])
    issues: list[Issue] = []
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        issues.extend((key_path(error["loc"]), _describe(error)) for error in exc.errors())
    issues.extend(cross_reference_issues(data))
    if issues or policy is None:
        raise PolicyError(source, issues)
    return policy


def key_path(loc: Sequence[int | str]) -> str:
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
