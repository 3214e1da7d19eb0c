"""Issue 8's fault run, in its short form: the sidecar with 2 workers over a real Redis and a real upstream
under fixed-rate load while Redis hangs and dies, a worker dies, a broken policy is sent, the upstream
slows and dies. `benchmarks/faults.py` checks every response; this test fails with its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_short_fault_run_passes_every_check(tmp_path: Path) -> None:
    report = tmp_path / "faults.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "faults.py"), "--short", "--output", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    text = report.read_text() if report.exists() else f"no report; stderr:\n{run.stderr[-3000:]}"
    assert run.returncode == 0, text
    assert "**All checks passed.**" in text
    assert "| personalized items shown without verified consent | 0 |" in text
