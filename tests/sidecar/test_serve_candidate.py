"""`guardrail serve --candidate` and `--record-cases` as an SRE runs them: a real subprocess with two
workers in front of a real upstream, its /metrics, the file the workers share, and `guardrail diff` on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx

from tests.conftest import ROOT
from tests.sidecar.servers import RecordingUpstream, sample, scrape, serve_process, wait_for, write_policy
from tests.upstream import DEFAULT_ITEMS

GRANT = {"consent": {"personalization": "granted"}}
REQUESTS = 40


def guardrail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardrail.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if not key.startswith("GUARDRAIL_")},
    )


def test_serve_refuses_a_candidate_that_does_not_load(tmp_path: Path) -> None:
    live = write_policy(tmp_path / "live.yaml")
    broken = write_policy(tmp_path / "candidate.yaml", mode="audit", default_locale="xx")
    result = guardrail("serve", "--config", str(live), "--upstream", "http://127.0.0.1:9", "--candidate", str(broken))
    assert result.returncode == 1
    assert "guardrail serve: the candidate policy is refused" in result.stderr
    assert f"{broken}: 2 problems" in result.stderr
    assert "mode: got 'audit'" in result.stderr and "default_locale" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_rejects_a_rate_outside_0_to_1(tmp_path: Path) -> None:
    live = write_policy(tmp_path / "live.yaml")
    result = guardrail(
        "serve", "--config", str(live), "--upstream", "http://127.0.0.1:9", "--record-cases", "x", "--record-rate", "2"
    )
    assert result.returncode == 2
    assert "a share of requests is 0 to 1, not 2" in result.stderr


def test_two_workers_count_the_candidate_and_append_cases_diff_agrees_with(
    tmp_path: Path, upstream: RecordingUpstream
) -> None:
    live = write_policy(tmp_path / "live.yaml")
    hide_more = {"weights": {"sensitive_category": 50, "signal_sensitivity": 10}, "discreet_at": 10, "hide_at": 20}
    candidate = write_policy(tmp_path / "candidate.yaml", policy_id="candidate", invasiveness=hide_more)
    cases = tmp_path / "cases.jsonl"
    with serve_process(
        "--config", str(live), "--upstream", upstream.url, "--workers", "2",
        "--candidate", str(candidate), "--candidate-rate", "1",
        "--record-cases", str(cases), "--record-rate", "1",
    ) as serve:  # fmt: skip
        serve.wait_ready()
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            for user in ("alice", "carol"):
                patched = client.patch(
                    "/guardrail/v1/controls",
                    headers={"x-user-id": user, "content-type": "application/merge-patch+json"},
                    content=json.dumps(GRANT),
                )
                assert patched.status_code == 200, patched.text
        for index in range(REQUESTS):
            headers = {"x-user-id": ("alice", "carol")[index % 2], "connection": "close"}  # either worker
            if index % 4 == 1:
                headers["sec-gpc"] = "1"
            assert httpx.get(f"{serve.url}/recommendations", headers=headers, timeout=10).status_code == 200
        items = REQUESTS * len(DEFAULT_ITEMS)
        samples = wait_for(
            lambda: (
                (found := scrape(serve.url))
                and sample(found, "guardrail_candidate_items_total", route="/recommendations") == items
                and found
            ),
            f"the candidate deciding all {items} items",
        )
        counted: Counter[tuple[str, str]] = Counter()
        for (name, labels), count in samples.items():
            if name == "guardrail_candidate_changes_total" and count:
                found = dict(labels)
                counted[found["live"], found["candidate"]] += int(count)
        assert sum(counted.values()) > 0
        assert serve.stop() == 0  # the workers write what they buffered as they stop
    assert not any("Traceback" in line for line in serve.lines), "\n".join(serve.lines)

    lines = cases.read_text().splitlines()
    assert len(lines) == REQUESTS
    assert all(json.loads(line)["route"] == "/recommendations" for line in lines)  # whole lines, none mixed
    assert "alice" not in cases.read_text() and "carol" not in cases.read_text()
    run = guardrail("diff", str(live), str(candidate), str(cases), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    said: Counter[tuple[str, str]] = Counter()
    for change in report["changes"]:
        said[change["from"], change["to"]] += change["count"]
    assert (report["requests"], report["items"], said) == (REQUESTS, items, counted)
