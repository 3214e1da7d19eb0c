"""`guardrail serve` as an SRE runs it: a real subprocess in front of a real upstream, workers,
signals, a policy file that changes under it, and its JSON logs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import uvicorn

from guardrail.cli import main
from guardrail.sidecar import listening_socket
from tests.conftest import ROOT
from tests.sidecar.servers import (
    RecordingUpstream,
    ServeProcess,
    live_policies,
    sample,
    scrape,
    serve_process,
    wait_for,
    write_policy,
)

ALICE = {"x-user-id": "alice"}
BROKEN = {"mode": "audit"}
ENOUGH = 2000  # requests, at most, until both workers have served some


def served_policy(url: str) -> str:
    """The policy id a guarded response names, on a new connection (so that any worker may take it)."""
    response = httpx.get(f"{url}/recommendations", headers={**ALICE, "connection": "close"}, timeout=10)
    policy: str = response.json()["guardrail"]["policy"]
    return policy


def test_serve_refuses_to_start_on_a_broken_policy(tmp_path: Path) -> None:
    broken = write_policy(tmp_path / "broken.yaml", **BROKEN)
    result = subprocess.run(
        [sys.executable, "-m", "guardrail.cli", "serve", "--config", str(broken), "--upstream", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if not key.startswith("GUARDRAIL_")},
    )
    assert result.returncode == 1
    assert f"{broken}: 1 problem\n  mode: got 'audit'; allowed: 'enforce' or 'shadow'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give the upstream's URL with --upstream or GUARDRAIL_UPSTREAM"),
        (["--upstream", "ftp://files.example"], "the upstream must be an http:// or https:// URL"),
        (["--upstream", "http://127.0.0.1:9", "--log-level", "loud"], "no log level 'loud'"),
    ],
)
def test_serve_says_what_is_missing_or_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    monkeypatch.delenv("GUARDRAIL_UPSTREAM", raising=False)
    monkeypatch.delenv("GUARDRAIL_LOG_LEVEL", raising=False)
    assert main(["serve", "--config", str(write_policy(tmp_path / "ok.yaml")), *args]) == 2
    assert says in capsys.readouterr().err


def test_two_workers_count_every_request_and_reload_together(tmp_path: Path, upstream: RecordingUpstream) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    with serve_process(
        "--config", str(policy), "--upstream", upstream.url, "--workers", "2", "--log-level", "info"
    ) as serve:
        serve.wait_ready()
        # Both workers up, each with its own live policy series (prometheus_client's `liveall` gauge).
        first_pids = set(
            wait_for(
                lambda: len(live_policies(scrape(serve.url))) == 2 and live_policies(scrape(serve.url)),
                "two live workers",
            )
        )

        # Requests on new connections until both workers have served some; then /metrics, read from
        # either worker, must count every one of them.
        sent = 0
        with httpx.Client(base_url=serve.url, headers={**ALICE, "connection": "close"}, timeout=10) as client:
            while sent < ENOUGH and len(_serving_pids(serve)) < 2:
                for _ in range(20):
                    assert client.get("/recommendations").status_code == 200
                    sent += 1
        assert _serving_pids(serve) == first_pids, "the requests did not reach both workers"
        wait_for(
            lambda: (
                sample(scrape(serve.url), "guardrail_requests_total", route="/recommendations", outcome="enforced")
                == sent
            ),
            f"/metrics counting all {sent} requests",
        )

        # SIGHUP to the supervisor: every worker reloads in place (same pids), and says so.
        write_policy(policy, policy_id="second")
        serve.signal(signal.SIGHUP)
        wait_for(
            lambda: sample(scrape(serve.url), "guardrail_policy_reloads_total", result="success") == 2, "2 reloads"
        )
        assert live_policies(scrape(serve.url)) == dict.fromkeys(first_pids, "second")
        assert {served_policy(serve.url) for _ in range(10)} == {"second"}

        # A broken file: refused by both, each logging the problems; the last good policy keeps serving.
        write_policy(policy, **BROKEN)
        serve.signal(signal.SIGHUP)
        wait_for(lambda: sample(scrape(serve.url), "guardrail_policy_reloads_total", result="error") == 2, "2 refusals")
        # Each worker's log line comes through its own pipe, read as it arrives: wait for both.
        refusals = wait_for(
            lambda: (
                (found := serve.logs("policy reload refused"))
                and {entry["pid"] for entry in found} == {int(pid) for pid in first_pids}
                and found
            ),
            "both workers logging the refusal",
        )
        assert {entry["pid"] for entry in refusals} == {int(pid) for pid in first_pids}
        assert all(entry["problems"] == ["mode: got 'audit'; allowed: 'enforce' or 'shadow'"] for entry in refusals)
        assert all(entry["level"] == "error" and entry["policy"] == "second" for entry in refusals)
        assert {served_policy(serve.url) for _ in range(10)} == {"second"}

        # A worker that dies is replaced; the new one, starting on the broken file, serves the last
        # live policy, and the dead worker's series leave /metrics. The counts survive it.
        victim = min(first_pids)
        os.kill(int(victim), signal.SIGKILL)
        pids = wait_for(
            lambda: (found := live_policies(scrape(serve.url))).keys() - first_pids and victim not in found and found,
            "a replacement worker",
        )
        assert set(pids.values()) == {"second"}
        assert len(pids) == 2
        assert (
            sample(scrape(serve.url), "guardrail_requests_total", route="/recommendations", outcome="enforced") >= sent
        )
        assert {served_policy(serve.url) for _ in range(10)} == {"second"}
        assert serve.stop() == 0
    assert not any("Traceback" in line for line in serve.lines), "\n".join(serve.lines)


def _serving_pids(serve: ServeProcess) -> set[str]:
    return {str(entry["pid"]) for entry in serve.logs("guarded request")}


def test_watch_picks_up_a_changed_policy_without_a_signal(tmp_path: Path, upstream: RecordingUpstream) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    with serve_process("--config", str(policy), "--upstream", upstream.url, "--watch") as serve:
        serve.wait_ready()
        assert served_policy(serve.url) == "test-policy"

        write_policy(policy, policy_id="second")
        wait_for(lambda: served_policy(serve.url) == "second", "the changed policy serving")
        samples = scrape(serve.url)
        assert sample(samples, "guardrail_policy_reloads_total", result="success") == 1
        assert sample(samples, "guardrail_policy_info", policy="second") == 1

        write_policy(policy, **BROKEN)
        wait_for(lambda: serve.logs("policy reload refused"), "the broken policy refused")
        assert sample(scrape(serve.url), "guardrail_policy_reloads_total", result="error") == 1
        assert served_policy(serve.url) == "second"


def test_workers_accept_tcp_connections_that_asyncio_marks_nodelay() -> None:
    """With workers, uvicorn hands them a socket it made with protocol 0; asyncio then leaves TCP_NODELAY off
    on every accepted connection and each response waits ~40 ms for the client's delayed ACK."""
    settings = uvicorn.Config("guardrail.sidecar:create_app", host="127.0.0.1", port=0)
    listener = listening_socket(settings)
    try:
        assert listener.proto == socket.IPPROTO_TCP
        listener.listen()
        with socket.create_connection(listener.getsockname()[:2]) as client:
            accepted, _ = listener.accept()
            with accepted, client:
                assert accepted.proto == socket.IPPROTO_TCP  # what asyncio's _set_nodelay checks
    finally:
        listener.close()
