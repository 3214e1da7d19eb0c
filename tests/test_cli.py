"""The `guardrail` command as a user runs it: a real subprocess, its output and exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

from tests.conftest import BASE_POLICY, ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardrail.cli", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_check_accepts_the_shipped_policies() -> None:
    files = [
        "config/guardrail.yaml",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").glob("examples/*.yaml")),
    ]
    result = run("check", *files)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(files)
    assert lines[0].startswith("config/guardrail.yaml: ok: policy demo-2026-11, mode enforce")


def test_check_lists_every_error_and_exits_1(tmp_path: Path) -> None:
    data = dict(BASE_POLICY, mode="audit", fail_mode="never")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = run("check", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}: 2 problems" in result.stderr
    assert "mode: got 'audit'; allowed: 'enforce' or 'shadow'" in result.stderr
    assert "fail_mode: got 'never'; allowed: 'closed' or 'open'" in result.stderr


def test_demo_serves_annotated_recommendations(unused_port: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "guardrail.cli", "demo", "--port", str(unused_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        base = f"http://127.0.0.1:{unused_port}"
        assert process.stdout is not None
        printed = process.stdout.readline()
        assert base in printed
        body = _get_when_up(f"{base}/recommendations", {"x-user-id": "alice"})
        assert body["guardrail"]["policy"] == "demo-2026-11"
        assert body["guardrail"]["kept"] >= 5
        assert all("explanation" in entry for entry in body["items"])
        carol = _get_when_up(f"{base}/recommendations", {"x-user-id": "carol", "x-user-age": "15"})
        assert all(entry["signals"] == [] for entry in carol["items"])
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=10)
    assert "Traceback" not in output


def _get_when_up(url: str, headers: dict[str, str]) -> Any:
    deadline = time.monotonic() + 20
    while True:
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                return orjson.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_version_is_the_installed_distributions() -> None:
    """`guardrail --version`, through the console script pip installed, names the version pip installed."""
    from importlib.metadata import version

    from guardrail.optional import DISTRIBUTION

    script = Path(sys.executable).parent / "guardrail"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"guardrail {version(DISTRIBUTION)}\n"
