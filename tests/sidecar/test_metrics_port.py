"""`guardrail serve --metrics-port P` (docs/architecture.md §9): `/metrics` on a port of its own, on the same host, and
then the public port's `/metrics` is the upstream's; with one process or several workers (their counts summed).
The exposition passes `promtool check metrics`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from guardrail import __version__
from guardrail.speedups import ACCELERATED
from tests.conftest import ROOT
from tests.sidecar.servers import (
    HOST,
    RecordingUpstream,
    ServeProcess,
    free_port,
    sample,
    scrape,
    scrape_text,
    serve_process,
    wait_for,
    write_policy,
)

ALICE = {"x-user-id": "alice"}
ENOUGH = 2000  # requests, at most, until both workers have served some


def serving_pids(serve: ServeProcess) -> set[int]:
    return {entry["pid"] for entry in serve.logs("guarded request")}


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_move_to_their_own_port_and_the_upstreams_are_reachable(
    tmp_path: Path, upstream: RecordingUpstream, workers: int
) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    metrics_port = free_port()
    # One worker is told by the flag, two by the environment.
    given = ["--metrics-port", str(metrics_port)] if workers == 1 else []
    env = {} if workers == 1 else {"GUARDRAIL_METRICS_PORT": str(metrics_port)}
    with serve_process(
        "--config",
        str(policy),
        "--upstream",
        upstream.url,
        "--workers",
        str(workers),
        "--log-level",
        "info",
        *given,
        env=env,
    ) as serve:
        serve.wait_ready()
        metrics_url = f"http://{HOST}:{metrics_port}"
        sent = 0
        with httpx.Client(base_url=serve.url, headers={**ALICE, "connection": "close"}, timeout=10) as client:
            while sent < ENOUGH and (sent == 0 or len(serving_pids(serve)) < workers):
                for _ in range(10):
                    assert client.get("/recommendations").status_code == 200
                    sent += 1
            public = client.get("/metrics")
        assert len(serving_pids(serve)) == workers, "the requests did not reach every worker"

        def counted() -> bool:
            samples = scrape(metrics_url)
            return (
                sample(samples, "guardrail_requests_total", route="/recommendations", outcome="enforced") == sent
                and sample(samples, "guardrail_upstream_requests_total", route="/recommendations", status_class="2xx")
                == sent
                and sample(samples, "guardrail_upstream_requests_total", route="other", status_class="2xx") == 1
            )

        wait_for(counted, f"the metrics port counting all {sent} requests and the upstream's /metrics")
        exposition = httpx.get(f"{metrics_url}/metrics", timeout=10).text
        elsewhere = httpx.get(f"{metrics_url}/recommendations", headers=ALICE, timeout=10)
    # The public port's /metrics is the upstream's own (the recording upstream echoes the path it got).
    assert public.status_code == 201
    assert public.json()["path"] == "/metrics"
    assert "guardrail_" not in public.text
    assert elsewhere.status_code == 404  # the metrics port serves nothing else
    assert [seen.path for seen in upstream.seen] == ["/recommendations"] * sent + ["/metrics"]
    samples = scrape_text(exposition)
    assert sample(samples, "guardrail_upstream_seconds_count", route="/recommendations") == sent
    accelerated = "true" if ACCELERATED else "false"
    assert sample(samples, "guardrail_build_info", version=__version__, accelerated=accelerated) == 1
    assert_promtool_accepts(exposition)


def test_without_the_flag_metrics_stay_on_the_public_port(tmp_path: Path, upstream: RecordingUpstream) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    with serve_process("--config", str(policy), "--upstream", upstream.url) as serve:
        serve.wait_ready()
        assert httpx.get(f"{serve.url}/recommendations", headers=ALICE, timeout=10).status_code == 200

        def counted() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            found = scrape(serve.url)
            return (
                found
                if sample(found, "guardrail_upstream_requests_total", route="/recommendations", status_class="2xx")
                else None
            )

        samples = wait_for(counted, "the request counted")
        exposition = httpx.get(f"{serve.url}/metrics", timeout=10).text
    assert sample(samples, "guardrail_requests_total", route="/recommendations", outcome="enforced") == 1
    assert [seen.path for seen in upstream.seen] == ["/recommendations"]  # the sidecar answered /metrics itself
    assert_promtool_accepts(exposition)


def assert_promtool_accepts(exposition: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not on PATH: install it with `apt-get install -y prometheus`"
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardrail.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if not key.startswith("GUARDRAIL_")},
    )


def test_the_metrics_port_is_in_the_help_and_checked() -> None:
    assert "--metrics-port" in run_serve("--help").stdout
    same = run_serve("--upstream", "http://127.0.0.1:9", "--port", "8123", "--metrics-port", "8123")
    assert same.returncode == 2
    assert "--metrics-port must differ from --port (8123)" in same.stderr
    bad = run_serve("--upstream", "http://127.0.0.1:9", "--metrics-port", "70000")
    assert bad.returncode == 2
    assert "--metrics-port" in bad.stderr and "Traceback" not in bad.stderr
