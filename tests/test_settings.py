"""Every `GUARDRAIL_*` setting in one class (guardrail/settings.py): read from the environment or from files in
the secrets directory, refused with the variable named, and documented in a table generated from the class."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from guardrail.cli import main
from guardrail.logs import user_hash
from guardrail.policy.models import JwtSettings
from guardrail.settings import Settings, SettingsProblem, variable
from guardrail.settings_table import markdown, section
from guardrail.sidecar import share_csrf_key
from guardrail.speedups import TRUE
from guardrail.tokens import TokenVerifier
from guardrail.web.csrf import csrf_key
from tests.conftest import ROOT

# GUARDRAIL_* names the package uses that are not settings (docs/configuration.md, "Not settings").
NOT_SETTINGS = {"GUARDRAIL_POLICY_SNAPSHOT"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No GUARDRAIL_* variable from outside; an empty secrets directory of this test's own."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(variable(name), raising=False)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    monkeypatch.setenv("GUARDRAIL_SECRETS_DIR", str(secrets))
    return secrets


def test_the_documented_table_is_the_one_the_class_makes() -> None:
    documented = section((ROOT / "docs" / "configuration.md").read_text(encoding="utf-8"))
    assert documented == markdown(), "run: python -m guardrail.settings_table --write docs/configuration.md"
    for name in Settings.model_fields:
        assert f"| `{variable(name)}` |" in documented


def test_every_guardrail_variable_the_package_names_is_a_setting() -> None:
    settings = {variable(name) for name in Settings.model_fields}
    named: dict[str, set[str]] = {}
    for path in (ROOT / "guardrail").rglob("*.py"):
        # As a string or in backticks: a variable's name (GUARDRAIL_CONTEXT, a header's constant, is not one).
        for name in re.findall(r"[\"'`](GUARDRAIL_[A-Z_]*[A-Z])\b", path.read_text(encoding="utf-8")):
            named.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    unknown = {name: sorted(paths) for name, paths in named.items() if name not in settings | NOT_SETTINGS}
    assert unknown == {}, "add them to guardrail.settings.Settings, or to the docs' 'Not settings'"


def test_no_module_reads_a_guardrail_variable_but_through_the_class() -> None:
    # `os.environ.get("GUARDRAIL_...")`, `os.getenv(...)`, `os.environ["GUARDRAIL_..."]` (but not `... = value`,
    # which `guardrail serve` writes for its workers). The engine's switch is the one exception.
    reading = re.compile(
        r"""(os\.environ\.get|os\.getenv)\(\s*["']GUARDRAIL_|os\.environ\[\s*["']GUARDRAIL_\w+["']\s*\](?!\s*=)"""
    )
    readers = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "guardrail").rglob("*.py") if reading.search(path.read_text())
    )
    assert readers == ["guardrail/speedups.py"]


def test_secrets_come_from_files_in_the_secrets_directory(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_environment / "GUARDRAIL_CSRF_KEY").write_text("csrf from a file\n")
    (clean_environment / "guardrail_log_key").write_text("log key from a file")  # any case
    (clean_environment / "MY_JWT_KEY").write_text("a jwt secret of 32 bytes or more.....\n")
    (clean_environment / "GUARDRAIL_STORE").write_text("redis://:hunter2@redis:6379/0")
    settings = Settings.load()
    assert settings.csrf_key is not None and settings.csrf_key.get_secret_value() == "csrf from a file"
    assert settings.store.get_secret_value() == "redis://:hunter2@redis:6379/0"
    assert "hunter2" not in repr(settings) and "csrf from a file" not in repr(settings)
    assert csrf_key() == b"csrf from a file"
    assert user_hash("alice") == user_hash("alice", b"log key from a file")
    # A key named by the policy (identity.jwt.key_env) is read the same way.
    verifier = TokenVerifier(JwtSettings(key_env="MY_JWT_KEY", algorithms=["HS256"]))
    assert verifier.key == "a jwt secret of 32 bytes or more....."
    # The environment wins over a file.
    monkeypatch.setenv("GUARDRAIL_CSRF_KEY", "csrf from the environment")
    assert csrf_key() == b"csrf from the environment"


def test_a_csrf_key_from_a_file_is_shared_by_the_workers_as_it_is(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_environment / "GUARDRAIL_CSRF_KEY").write_text("one key for all replicas")
    share_csrf_key(4, Settings.load())
    assert csrf_key() == b"one key for all replicas"  # no key made up, that would hide the file's


def test_a_missing_secrets_directory_is_no_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GUARDRAIL_SECRETS_DIR", str(tmp_path / "not-there"))
    assert Settings.load().csrf_key is None  # and no warning: warnings are errors here
    monkeypatch.delenv("GUARDRAIL_SECRETS_DIR")
    assert Settings.load().secrets_dir == Path("/run/secrets")


def test_a_secrets_directory_that_is_a_file_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GUARDRAIL_SECRETS_DIR", str(tmp_path / "file"))
    with pytest.raises(SettingsProblem, match=r"^GUARDRAIL_SECRETS_DIR: .*give a directory of secret files$"):
        Settings.load()


def test_bad_values_are_refused_naming_each_variable_and_never_repeating_a_secret(
    monkeypatch: pytest.MonkeyPatch, clean_environment: Path
) -> None:
    monkeypatch.setenv("GUARDRAIL_METRICS_PORT", "70000")
    monkeypatch.setenv("GUARDRAIL_LOG_LEVEL", "loud")
    (clean_environment / "GUARDRAIL_WATCH").write_text("perhaps")
    with pytest.raises(SettingsProblem) as raised:
        Settings.load()
    assert str(raised.value).split("; ") == [
        "GUARDRAIL_WATCH: Input should be a valid boolean, unable to interpret input, not 'perhaps'",
        "GUARDRAIL_METRICS_PORT: Input should be less than or equal to 65535, not '70000'",
        "GUARDRAIL_LOG_LEVEL: Input should be 'debug', 'info', 'warning', 'error' or 'critical', not 'loud'",
    ]
    monkeypatch.delenv("GUARDRAIL_METRICS_PORT")
    monkeypatch.delenv("GUARDRAIL_LOG_LEVEL")
    (clean_environment / "GUARDRAIL_WATCH").unlink()
    monkeypatch.setenv("GUARDRAIL_LOG_KEY", "   ")
    assert Settings.load().log_key is None  # blank is unset


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_the_commands_refuse_a_bad_setting_without_a_stack_trace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    monkeypatch.setenv("GUARDRAIL_UPSTREAM", "http://127.0.0.1:9")
    monkeypatch.setenv("GUARDRAIL_UPSTREAM_TIMEOUT", "soon")
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"guardrail {command}: GUARDRAIL_UPSTREAM_TIMEOUT: Input should be a valid number, unable to parse string "
        "as a number, not 'soon'\n"
    )


@pytest.mark.parametrize("value", ["1", "true", "YES", "on", "0", "false", "no", "off", ""])
def test_the_engines_switch_reads_true_as_the_class_does(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GUARDRAIL_PURE_PYTHON", value)
    assert Settings.load().pure_python is (value.strip().lower() in TRUE)


def test_importing_guardrail_or_its_logs_loads_no_settings() -> None:
    code = "import sys, guardrail, guardrail.logs; print('pydantic_settings' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "False"
