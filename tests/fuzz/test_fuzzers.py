"""A short, time-bounded run of every atheris fuzzer (coverage-guided, libFuzzer), all at once.

Each target runs for GUARDRAIL_FUZZ_SECONDS (default 8) from its seeds, in its own process. Any
exception a target lets out (anything but the documented errors, such as TcfError, which the targets
expect) is a crash: the test fails with the fuzzer's report and the input, saved for replaying with
`python -m tests.fuzz.run TARGET FILE`. For a longer search: `python -m tests.fuzz.run TARGET -max_total_time=3600`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fuzz.seeds import seeds, write_seeds
from tests.fuzz.targets import TARGETS

SECONDS = int(os.environ.get("GUARDRAIL_FUZZ_SECONDS", "8"))

# A platform limit, not a missing install: pyproject installs atheris on Linux only (on macOS it needs a
# clang with libFuzzer, which Apple's is not). On Linux a missing atheris fails this test.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="atheris (libFuzzer) is installed on Linux only")


def test_the_fuzzers_find_no_crash(tmp_path: Path) -> None:
    runs: dict[str, subprocess.Popen[str]] = {}
    for name in TARGETS:
        corpus = tmp_path / name
        write_seeds(name, corpus)
        command = [
            sys.executable, str(ROOT / "tests" / "fuzz" / "run.py"), name,
            f"-max_total_time={SECONDS}", "-timeout=20", "-seed=1", "-print_final_stats=1",
            f"-artifact_prefix={tmp_path / name}-", str(corpus),
        ]  # fmt: skip
        runs[name] = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reports = {name: run.communicate(timeout=SECONDS + 180)[0] for name, run in runs.items()}

    for name, run in runs.items():
        report = reports[name]
        crashes = sorted(tmp_path.glob(f"{name}-*"))
        assert run.returncode == 0 and not crashes, (
            f"fuzzer {name} exited with {run.returncode}; inputs: "
            f"{[path.read_bytes()[:500] for path in crashes]}\n{report[-6000:]}"
        )
        # It really fuzzed: every seed ran, and then mutations of them.
        done = re.search(r"stat::number_of_executed_units: (\d+)", report)
        assert done is not None and int(done.group(1)) > len(seeds(name)), report[-3000:]
