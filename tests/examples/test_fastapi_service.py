"""The FastAPI example service (examples/fastapi_service): in process over ASGI, and run as its README says."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import orjson
from prometheus_client import REGISTRY

from examples.fastapi_service.app import app
from tests.conftest import ROOT, ClientFactory

MERGE = {"content-type": "application/merge-patch+json"}


def counted() -> float:
    found = REGISTRY.get_sample_value("guardrail_requests_total", {"route": "/recommendations", "outcome": "enforced"})
    return found or 0.0


def ids(response: httpx.Response) -> list[str]:
    return [book["id"] for book in response.json()["items"]]


async def test_a_new_user_gets_checked_books_with_explanations(client_for: ClientFactory) -> None:
    response = await client_for(app).get("/recommendations", headers={"x-user-id": "ana"})
    assert response.status_code == 200
    body = response.json()
    # The mental-health book needs an opt-in (left out before it is checked); partner data needs consent.
    assert ids(response) == ["b1", "b2", "b3", "b4", "b7"]
    assert body["items"][0]["explanation"]["text"] == "You see this because of what you read."
    assert body["page"] == 1
    assert body["guardrail"]["hidden"] == 1 and body["guardrail"]["notice"]
    assert response.headers["guardrail-decision"] == body["guardrail"]["decision"]
    assert response.headers["cache-control"] == "private, no-store"


async def test_a_muted_topic_is_not_even_asked_for(client_for: ClientFactory) -> None:
    client = client_for(app)
    muted = await client.patch(
        "/guardrail/v1/controls",
        headers={"x-user-id": "bo", **MERGE},
        content=orjson.dumps({"muted": {"fiction.mystery": {"until": None}}}),
    )
    assert muted.status_code == 200, muted.text
    before = counted()
    response = await client.get("/recommendations", headers={"x-user-id": "bo"})
    assert ids(response) == ["b1", "b3", "b4"]
    # Checked in process, passed through by the middleware: counted once.
    assert counted() == before + 1
    # The user can look the decision up.
    receipts = await client.get("/guardrail/v1/decisions", headers={"x-user-id": "bo"})
    assert receipts.status_code == 200, receipts.text
    assert response.json()["guardrail"]["decision"] in receipts.text


def test_it_runs_with_one_command(unused_port: int) -> None:
    command = [sys.executable, "-m", "examples.fastapi_service", "--port", str(unused_port)]
    # As a user runs it from the repository's root (where `-m` finds `examples/`), whatever this run set.
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONSAFEPATH"}
    server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{unused_port}/recommendations", headers={"x-user-id": "cy"}, timeout=2
                )
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "the example did not start within 30 s"
                time.sleep(0.2)
        assert response.status_code == 200
        assert ids(response) == ["b1", "b2", "b3", "b4", "b7"]
        assert response.headers["guardrail-mode"] == "enforce"
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout:
            server.stdout.close()
