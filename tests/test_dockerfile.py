"""The container image without a container engine: the Dockerfile's run stage is read, and its CMD and
HEALTHCHECK run here as the image would run them, with its ENV, in front of a real upstream.

Only what a test machine must change is changed: the policy path (the image copies config/guardrail.yaml
to /etc/guardrail/), the virtual environment's bin directory on PATH, and the port (a free one, not 8080).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT
from tests.sidecar.servers import DEADLINE, RecordingUpstream, free_port

DOCKERFILE = ROOT / "Dockerfile"
IMAGE_POLICY = "/etc/guardrail/guardrail.yaml"


def run_stage() -> list[tuple[str, str]]:
    """(instruction, arguments) of the last stage, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), arguments.strip()))
    assert len(stages) >= 2, "a multi-stage build: tools stay in the build stage"
    return stages[-1]


def instruction(stage: list[tuple[str, str]], name: str) -> str:
    found = [arguments for kind, arguments in stage if kind == name]
    assert found, f"the run stage has no {name}"
    return found[-1]


def image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for kind, arguments in stage:
        if kind == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_the_image_runs_as_an_unprivileged_user_with_the_policy_in_etc() -> None:
    stage = run_stage()
    user = instruction(stage, "USER").split(":")[0]
    assert user not in ("root", "0")
    assert any(kind == "COPY" and arguments.endswith(IMAGE_POLICY) for kind, arguments in stage)
    assert image_env(stage)["GUARDRAIL_CONFIG"] == IMAGE_POLICY
    assert instruction(stage, "CMD").startswith("["), "exec form: guardrail is PID 1 and gets SIGTERM and SIGHUP"
    assert "/guardrail/healthz" in instruction(stage, "HEALTHCHECK")


def test_cmd_and_healthcheck_work_as_in_the_image() -> None:
    stage = run_stage()
    port = free_port()
    command = [arg.replace("8080", str(port)) for arg in json.loads(instruction(stage, "CMD"))]
    healthcheck = json.loads(instruction(stage, "HEALTHCHECK").split("CMD", 1)[1])
    healthcheck = [arg.replace("8080", str(port)) for arg in healthcheck]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GUARDRAIL_", "PROMETHEUS_"))}
    for key, value in image_env(stage).items():
        env[key] = value.replace("/opt/guardrail/bin", str(Path(sys.executable).parent)).replace(
            "$PATH", os.environ["PATH"]
        )
    env["GUARDRAIL_CONFIG"] = str(ROOT / "config" / "guardrail.yaml")  # what COPY put at IMAGE_POLICY
    with RecordingUpstream() as upstream:
        env["GUARDRAIL_UPSTREAM"] = upstream.url  # what `docker run -e` gives
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + DEADLINE
            while subprocess.run(healthcheck, env=env, capture_output=True, check=False).returncode != 0:
                assert process.poll() is None, f"the CMD exited: {process.stderr.read() if process.stderr else ''}"
                assert time.monotonic() < deadline, "the HEALTHCHECK never passed"
                time.sleep(0.2)
            answer = httpx.get(
                f"http://127.0.0.1:{port}/recommendations", headers={"x-user-id": "alice"}, timeout=DEADLINE
            )
            assert answer.status_code == 200
            assert answer.headers["guardrail-mode"] == "enforce"
            process.send_signal(signal.SIGHUP)  # docker kill -s HUP: the policy is read again, serving goes on
            assert subprocess.run(healthcheck, env=env, capture_output=True, check=False).returncode == 0
            process.send_signal(signal.SIGTERM)  # docker stop: a graceful stop, then uvicorn re-raises the signal
            _, log = process.communicate(timeout=DEADLINE)
            assert process.returncode in (0, -signal.SIGTERM)
            assert "Application shutdown complete" in log
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context, as Docker matches it: patterns are
    relative to the context's root, `*` stays within one directory, `**/` spans any number of them, and
    a pattern that matches a directory leaves out everything under it."""
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            return True
    return False


def test_the_build_context_leaves_out_what_was_built_or_installed_here() -> None:
    """The image builds its own extension from the sources: a host's *.so, build output, virtual
    environment, benchmarks or tests never reach it."""
    for path in [
        "guardrail/_speedups.cpython-311-x86_64-linux-gnu.so",
        "guardrail/_speedups.cp311-win_amd64.pyd",
        "build/lib/guardrail/engine/loop.py",
        "dist/personalization_guardrail-0.2.0.tar.gz",
        ".venv/bin/python",
        "venv/lib/python3.11/site-packages/x.py",
        "tools/.venv/bin/python",
        "guardrail/__pycache__/bodies.cpython-311.pyc",
        "benchmarks/suite.py",
        "tests/conftest.py",
    ]:
        assert dockerignored(path), f"{path} would be sent to the image build"
    needed = [
        "guardrail/engine/loop.py",
        "guardrail/_speedups.c",
        "requirements/runtime.txt",
        "pyproject.toml",
        "LICENSE",
    ]
    for path in needed:
        assert not dockerignored(path), f"{path} is left out of the build context, but the image needs it"


def test_everything_the_image_copies_is_in_the_build_context() -> None:
    """A source missing from the repository, or excluded by .dockerignore, fails `docker build`."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    sources = [
        source
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), f"{source} is in .dockerignore"
