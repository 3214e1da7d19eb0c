"""The controls page's CSRF key with `guardrail serve --workers N`: one key for every worker, so that a
form fetched from one worker can be posted to another; a warning when replicas sharing a store would
each sign with their own."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.sidecar.servers import RecordingUpstream, ServeProcess, serve_process, wait_for, write_policy

ALICE = {"x-user-id": "alice"}
PAGE = "/guardrail/controls"
ENOUGH = 200  # new connections, at most, until both workers have taken one


def worker_of(serve: ServeProcess, client: httpx.Client) -> str:
    """The pid of the worker serving `client`'s connection, from the log line of a guarded request on it."""
    before = len(serve.logs("guarded request"))
    assert client.get("/recommendations").status_code == 200
    lines = wait_for(lambda: (found := serve.logs("guarded request"))[before:] and found, "its log line")
    return str(lines[-1]["pid"])


def page_token(client: httpx.Client) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get(PAGE).text)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def test_a_form_from_one_worker_is_accepted_by_another(tmp_path: Path, upstream: RecordingUpstream) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    with serve_process(
        "--config", str(policy), "--upstream", upstream.url, "--workers", "2", "--log-level", "info"
    ) as serve:
        serve.wait_ready()
        # A kept-alive connection on each worker, and the form each of them issued.
        by_worker: dict[str, tuple[httpx.Client, str]] = {}
        try:
            for _ in range(ENOUGH):
                client = httpx.Client(base_url=serve.url, headers=ALICE, timeout=10)
                pid = worker_of(serve, client)
                if pid in by_worker:
                    client.close()
                    continue
                by_worker[pid] = (client, page_token(client))
                if len(by_worker) == 2:
                    break
            assert len(by_worker) == 2, "the connections did not reach both workers"
            (_, first_token), (second, second_token) = by_worker.values()
            posted = second.post(
                PAGE,
                data={"csrf": first_token, "personalization": "on", "locale": ""},
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        finally:
            for client, _ in by_worker.values():
                client.close()
    assert posted.status_code == 303  # saved, not 403
    assert posted.headers["location"] == f"{PAGE}?saved=1"
    assert first_token == second_token


def test_serve_warns_that_replicas_sharing_a_store_need_one_csrf_key(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    with serve_process(
        "--config",
        str(policy),
        "--upstream",
        "http://127.0.0.1:9",
        env={"GUARDRAIL_STORE": "redis://127.0.0.1:9/0"},  # (not reachable: readiness says so, serving starts)
    ) as serve:
        warnings = wait_for(lambda: serve.logs("GUARDRAIL_CSRF_KEY is not set"), "the warning")
    assert warnings[0]["level"] == "warning"
    assert "every replica" in warnings[0]["message"]

    with serve_process(
        "--config",
        str(policy),
        "--upstream",
        "http://127.0.0.1:9",
        env={"GUARDRAIL_STORE": "redis://127.0.0.1:9/0", "GUARDRAIL_CSRF_KEY": "one key for all replicas"},
    ) as serve:
        wait_for(lambda: serve.logs("Uvicorn running") or serve.logs("Application startup complete"), "the start")
    assert serve.logs("GUARDRAIL_CSRF_KEY is not set") == []
