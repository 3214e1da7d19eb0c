"""Mutated policy files (the shipped ones, with keys deleted, added, retyped, or the text damaged)
through `load_policy`: a `Policy` that a middleware can serve, or a `PolicyError` naming the file and
the key paths. Never any other exception (issue 8)."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, note
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware, PolicyError, load_policy
from guardrail.errors import GuardrailError
from guardrail.policy.models import Policy
from tests.conftest import ROOT
from tests.strategies import examples
from tests.upstream import Upstream

SHIPPED = sorted((ROOT / "config").glob("**/*.yaml"))
SHIPPED_DATA = {path.name: yaml.safe_load(path.read_text(encoding="utf-8")) for path in SHIPPED}
SHIPPED_TEXT = {path.name: path.read_text(encoding="utf-8") for path in SHIPPED}
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: ten times faster than PyYAML's own

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities too: YAML has .nan and .inf
    st.sampled_from(["", "x", "GET", "/", "en", "ko", "personalization", "watch_history", "10.0.0.0/8", "30/minute"]),
    st.text(max_size=12),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=8), SCALARS, max_size=3))


def paths(data: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(key path as PolicyError writes it, container, key) for every value in the document."""
    if isinstance(data, dict):
        for key in data:
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path, data, key
            yield from paths(data[key], path)
    elif isinstance(data, list):
        for index in range(len(data)):
            path = f"{prefix}[{index}]"
            yield path, data, index
            yield from paths(data[index], path)


def related(path: str, other: str) -> bool:
    """One key path lies on the other's way: `routes[0]` and `routes[0].path`."""
    short, long = sorted((path, other), key=len)
    return long == short or long.startswith((f"{short}.", f"{short}["))


@st.composite
def mutated_documents(draw: st.DrawFn) -> tuple[str, Any, str | None]:
    """(file name, document, a key path the loader must name if it refuses the document)."""
    name = draw(st.sampled_from(sorted(SHIPPED_DATA)))
    document = copy.deepcopy(SHIPPED_DATA[name])
    original = {path: container[key] for path, container, key in paths(SHIPPED_DATA[name])}
    expected: str | None = None
    for _ in range(draw(st.integers(1, 3))):
        path, container, key = draw(st.sampled_from(list(paths(document))))
        action = draw(st.sampled_from(["delete", "replace", "unknown key", "rename", "wrap in a list"]))
        note(f"{action} {path}")
        if expected is not None and related(expected, path):
            expected = None  # this mutation undoes or moves the earlier one
        if action == "delete":
            del container[key]
        elif action == "replace":
            new = container[key] = draw(VALUES)
            # A container where the file has a scalar, or the other way round, is a type error right there.
            old = original.get(path)
            if old is not None and new is not None and isinstance(old, dict | list) != isinstance(new, dict | list):
                expected = path
        elif action == "unknown key" and isinstance(container[key], dict):
            container[key]["surprise_key"] = draw(SCALARS)
            expected = f"{path}.surprise_key"
        elif action == "rename" and isinstance(container, dict):
            container[f"{key}x"] = container.pop(key)
        elif action == "wrap in a list":
            container[key] = [container[key]]
        if not list(paths(document)):
            break
    return name, document, expected


@st.composite
def damaged_texts(draw: st.DrawFn) -> tuple[str, bytes]:
    """The file's text with bytes inserted, deleted or cut: bad indentation, tabs, invalid UTF-8, ..."""
    name = draw(st.sampled_from(sorted(SHIPPED_TEXT)))
    data = bytearray(SHIPPED_TEXT[name].encode())
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        insert = draw(
            st.sampled_from([b"\t", b" ", b"  ", b":", b"- ", b"{", b"[", b"&a ", b"*a", b"!!python/name:os.system ",
                             b"\xff", b"\x00", b"\n", b"#", b'"', b"'", b"%YAML 1.1\n", b"---\n", b"? ", b"[" * 1000])
            | st.binary(min_size=1, max_size=3)
        )  # fmt: skip
        action = draw(st.sampled_from(["insert", "delete", "cut"]))
        if action == "insert":
            data[position:position] = insert
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 40))]
        else:
            del data[position:]
    return name, bytes(data)


def load_or_refuse(content: bytes, name: str) -> Policy | PolicyError:
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / name
        file.write_bytes(content)
        try:
            return serve(load_policy(file))
        except PolicyError as exc:
            refusal = exc
    report = refusal.report()
    assert report.startswith(f"{file}: "), report
    assert refusal.issues, report
    return refusal


def serve(policy: Policy) -> Policy:
    """A policy that loads can be served: every rule it states can be compiled and applied. The one
    thing a policy cannot say is the JWT key: that comes from the environment, checked here."""
    try:
        GuardrailMiddleware(Upstream(), policy=policy, store="memory://", registry=CollectorRegistry())
    except GuardrailError as exc:
        missing = str(exc)
    else:
        return policy
    assert policy.identity.source == "jwt", missing
    assert policy.identity.jwt is None or f"environment variable {policy.identity.jwt.key_env} " in missing
    return policy


@examples(30)
@given(mutated_documents())
def test_a_mutated_policy_loads_or_is_refused_naming_the_key(case: tuple[str, Any, str | None]) -> None:
    name, document, expected = case
    result = load_or_refuse(yaml.dump(document, Dumper=DUMPER, allow_unicode=True).encode(), name)
    if isinstance(result, PolicyError):
        issue_paths = [path for path, _ in result.issues]
        assert all(issue_paths), result.report()  # the document is a mapping: every problem has a place
        if expected is not None:
            assert any(related(expected, path) for path in issue_paths), (expected, result.report())


@examples(60)
@given(damaged_texts())
def test_a_damaged_policy_file_loads_or_is_refused(case: tuple[str, bytes]) -> None:
    name, content = case
    load_or_refuse(content, name)


# -- found by the fuzzing above -------------------------------------------------------------------

DEMO_TEXT = SHIPPED_TEXT["guardrail.yaml"]


def refused(text: str) -> PolicyError:
    result = load_or_refuse(text.encode(), "policy.yaml")
    assert isinstance(result, PolicyError)
    return result


def test_deeply_nested_yaml_is_a_policy_error() -> None:
    # PyYAML reads collections recursively: this used to escape as a RecursionError.
    result = refused("version: 1\nroutes: " + "[" * 1000)
    assert result.issues == [("", "not valid YAML: collections nested too deeply")]


def test_a_key_written_twice_is_named_with_both_lines() -> None:
    # YAML forbids it, PyYAML keeps the last one: a second hide_at used to replace the first silently.
    text = DEMO_TEXT.replace("  hide_at: 70\n", "  hide_at: 70\n  hide_at: 101\n")
    result = refused(text)
    line = text.splitlines().index("  hide_at: 70") + 1
    assert result.issues == [
        (
            "invasiveness.hide_at",
            f"written twice (lines {line} and {line + 1}); YAML keeps only the last one, remove one",
        )
    ]
    flow = refused(DEMO_TEXT.replace("gambling: {sensitive: true,", "gambling: {sensitive: true, sensitive: false,"))
    assert [path for path, _ in flow.issues] == ["categories.gambling.sensitive"]


def test_merge_keys_and_anchors_still_load() -> None:
    text = DEMO_TEXT.replace(
        "  movies: {label: {en: movies, ko: 영화}}",
        "  movies: &plain {label: {en: movies, ko: 영화}}\n  films: {<<: *plain}",
    )
    policy = load_or_refuse(text.encode(), "policy.yaml")
    assert isinstance(policy, Policy) and policy.categories["films"] == policy.categories["movies"]


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("header: x-user-id", "header: x-사용자", "identity.header"),
        ("age_header: x-user-age", "age_header: x user age", "identity.age_header"),
        ("tcf: {cookie: euconsent-v2,", "tcf: {cookie: 'euconsent v2',", "tcf.cookie"),
        ("strip_headers: [x-user-id,", "strip_headers: ['x-user-id:',", "routes[0].non_personalized.strip_headers"),
    ],
)
def test_a_header_name_that_could_never_match_is_refused(old: str, new: str, path: str) -> None:
    # A name that is not an HTTP token used to load, then crash the middleware (UnicodeEncodeError)
    # or never match any request (everyone anonymous, nothing stripped).
    assert old in DEMO_TEXT
    result = refused(DEMO_TEXT.replace(old, new, 1))
    assert [issue_path for issue_path, _ in result.issues] == [path]
    assert "would never match a request" in result.issues[0][1]
