"""The sidecar runs without httpx: it is the tests' client, not one of the `sidecar` extra's modules."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CHECK = """
import sys
import guardrail.cli, guardrail.sidecar
from guardrail.sidecar import ReverseProxy, build_sidecar, serve
from guardrail.sidecar.http1 import ConnectionPool
print(sorted(name for name in sys.modules if name.partition(".")[0] in ("httpx", "httpcore")))
"""


def test_importing_the_sidecar_does_not_import_httpx() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
