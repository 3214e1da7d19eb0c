"""Policy files: every mistake reported at once, with the file, the key path and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from guardrail import PolicyError, load_policy, parse_policy
from tests.conftest import BASE_POLICY


def write(tmp_path: Path, data: Any) -> Path:
    file = tmp_path / "policy.yaml"
    file.write_text(yaml.safe_dump(data, allow_unicode=True) if not isinstance(data, str) else data)
    return file


def problems(tmp_path: Path, data: Any) -> dict[str, str]:
    with pytest.raises(PolicyError) as caught:
        load_policy(write(tmp_path, data))
    assert caught.value.source.endswith("policy.yaml")
    return dict(caught.value.issues)


def policy_with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE_POLICY)
    data.update(changes)
    return data


def test_the_base_policy_loads_and_is_frozen(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, BASE_POLICY))
    assert policy.policy_id == "test-policy"
    with pytest.raises(ValidationError):
        policy.mode = "shadow"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "path", "says"),
    [
        ({"mode": "audit"}, "mode", "allowed: 'enforce' or 'shadow'"),
        ({"fail_mode": "maybe"}, "fail_mode", "allowed: 'closed' or 'open'"),
        ({"unknown_categories": "ignore"}, "unknown_categories", "allowed: 'discreet', 'hide' or 'keep'"),
        ({"version": 2}, "version", "allowed: 1"),
        ({"surprise": 1}, "surprise", "unknown key"),
        ({"store_timeout_ms": "fast"}, "store_timeout_ms", "valid integer"),
        ({"identity": {"source": "cookie"}}, "identity.source", "'header', 'jwt', 'scope' or 'callable'"),
        ({"identity": {"trusted_proxies": ["localhost"]}}, "identity.trusted_proxies", "not an IP network"),
        ({"locales": ["en", "fr"]}, "locales[1]", "no messages exist for locale 'fr'; available: en, ko"),
        ({"default_locale": "ko", "locales": ["en"]}, "default_locale", "not one of the enabled locales"),
        ({"policy_id": None}, "policy_id", "required key is missing"),
    ],
)
def test_schema_errors_name_the_key_and_what_is_allowed(
    tmp_path: Path, change: dict[str, Any], path: str, says: str
) -> None:
    data = policy_with(**change)
    if change.get("policy_id", "") is None:
        del data["policy_id"]
    found = problems(tmp_path, data)
    assert path in found, found
    assert says in found[path]


def test_cross_references_are_checked(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE_POLICY)
    data["signals"]["watch_history"]["purpose"] = "advertising"
    data["categories"]["movies"]["label"] = {"en": "movies"}
    data["categories"]["cars.electric"] = {"label": {"en": "EVs", "ko": "전기차"}}
    data["routes"][0]["default_signals"] = ["watch_history", "heartbeat"]
    data["invasiveness"]["discreet_at"] = 80
    found = problems(tmp_path, data)
    assert (
        "unknown purpose 'advertising'; defined purposes: measurement, personalization, sharing"
        in found["signals.watch_history.purpose"]
    )
    assert "missing ko" in found["categories.movies.label"]
    assert "parent category 'cars' is not defined" in found["categories.cars.electric"]
    assert "unknown signal 'heartbeat'" in found["routes[0].default_signals[1]"]
    assert "must not be above hide_at" in found["invasiveness.discreet_at"]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE_POLICY)
    data["mode"] = "audit"  # a schema error...
    data["signals"]["watch_history"]["purpose"] = "advertising"  # ...and a cross-reference error
    data["routes"][1]["methods"] = ["FETCH"]
    data["routes"][2]["extra"] = True
    found = problems(tmp_path, data)
    assert {"mode", "signals.watch_history.purpose", "routes[1].methods[0]", "routes[2].extra"} <= set(found)


def test_report_is_readable(tmp_path: Path) -> None:
    file = write(tmp_path, policy_with(mode="audit", fail_mode="sometimes"))
    with pytest.raises(PolicyError) as caught:
        load_policy(file)
    report = caught.value.report()
    assert report.splitlines()[0] == f"{file}: 2 problems"
    assert "  mode: got 'audit'; allowed: 'enforce' or 'shadow'" in report
    assert "Traceback" not in report


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("version: 1\npolicy_id: [unclosed\n", "not valid YAML: line"),
        ("- just\n- a list\n", "must be a mapping"),
        ("", "must be a mapping"),
    ],
)
def test_files_that_are_not_policies(tmp_path: Path, text: str, says: str) -> None:
    assert says in problems(tmp_path, text)[""]


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "nope.yaml")
    assert "cannot read the file" in caught.value.report()


def test_parse_policy_from_text() -> None:
    policy = parse_policy(yaml.safe_dump(BASE_POLICY))
    assert [route.path for route in policy.routes] == ["/recommendations", "/feed/*", "/list"]
    assert policy.identity.header == "x-user-id"
