"""`app.add_middleware(GuardrailMiddleware, policy="bad.yaml")`: Starlette builds the middleware on the app's first
call, where an exception would read as "ASGI 'lifespan' protocol appears unsupported" and a 500 per request. The
startup fails instead, naming every problem, or, on a server without a lifespan, each request is a 503 that says why.
Tested through the ASGI interface and under a real uvicorn, whose output and exit code a user sees."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message

from guardrail import GuardrailMiddleware, PolicyError
from tests.conftest import ClientFactory
from tests.sidecar.servers import DEADLINE
from tests.upstream import http_scope

PROBLEMS = ("policy_id", "purposes", "signals", "routes")


async def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("hello")


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/hello", hello)])


def fastapi_app() -> FastAPI:
    app = FastAPI()
    app.add_api_route("/hello", hello)
    return app


async def lifespan_of(app: Any) -> list[dict[str, Any]]:
    """What the app sends to a server that starts it (and, if it started, stops it)."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}, receive, send)
    return sent


def test_called_directly_the_middleware_still_raises_at_the_call(broken_policy_file: Path) -> None:
    with pytest.raises(PolicyError) as raised:
        GuardrailMiddleware(starlette_app(), policy=broken_policy_file)
    assert len(raised.value.issues) == 4


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
async def test_added_with_add_middleware_a_bad_policy_fails_the_startup_naming_every_problem(
    make_app: Any, broken_policy_file: Path
) -> None:
    app = make_app()
    app.add_middleware(GuardrailMiddleware, policy=str(broken_policy_file), registry=CollectorRegistry())
    sent = await lifespan_of(app)
    assert [message["type"] for message in sent] == ["lifespan.startup.failed"]
    text = sent[0]["message"]
    assert text.startswith(f"guardrail cannot start: {broken_policy_file}: 4 problems")
    for key in PROBLEMS:
        assert f"  {key}: " in text


async def test_added_with_add_middleware_a_bad_store_url_fails_the_startup(policy_file: Path) -> None:
    app = starlette_app()
    app.add_middleware(GuardrailMiddleware, policy=policy_file, store="mongodb://db", registry=CollectorRegistry())
    sent = await lifespan_of(app)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "unknown store URL 'mongodb://db'" in sent[0]["message"]


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
async def test_without_a_lifespan_every_request_is_a_503_that_says_why(
    make_app: Any, broken_policy_file: Path, client_for: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    app.add_middleware(GuardrailMiddleware, policy=broken_policy_file, registry=CollectorRegistry())
    client = client_for(app)
    with caplog.at_level(logging.ERROR, logger="guardrail"):
        for path in ("/hello", "/recommendations", "/guardrail/readyz"):
            response = await client.get(path)
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["title"] == "Service Unavailable"
            assert problem["detail"].startswith(f"guardrail cannot start: {broken_policy_file}: 4 problems")
            assert "Traceback" not in response.text
    # Every problem is in the log, said once; whoever asks is told only what kind of problem it is.
    said = [record.getMessage() for record in caplog.records if record.name == "guardrail"]
    assert len(said) == 1
    for key in PROBLEMS:
        assert f"  {key}: " in said[0]


async def test_without_a_lifespan_a_websocket_is_closed(broken_policy_file: Path) -> None:
    app = starlette_app()
    app.add_middleware(GuardrailMiddleware, policy=broken_policy_file, registry=CollectorRegistry())
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({**http_scope("/ws"), "type": "websocket", "subprotocols": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1011}]


# -- under uvicorn, as a user runs it --------------------------------------------------------------

SERVICE = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message

from guardrail import GuardrailMiddleware


async def hello(request):
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/hello", hello)])
app.add_middleware(GuardrailMiddleware, policy={policy!r}, store="memory://")
"""


def uvicorn(directory: Path, port: int, lifespan: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "uvicorn", "service:app", "--app-dir", str(directory)]
    return subprocess.Popen(  # the test's own interpreter and arguments
        [*command, "--port", str(port), "--lifespan", lifespan],
        cwd=directory,
        env={name: value for name, value in os.environ.items() if not name.startswith("GUARDRAIL_")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_uvicorn_exits_at_startup_naming_the_policys_problems(
    lifespan: str, tmp_path: Path, broken_policy_file: Path, unused_port: int
) -> None:
    (tmp_path / "service.py").write_text(SERVICE.format(policy=str(broken_policy_file)), encoding="utf-8")
    process = uvicorn(tmp_path, unused_port, lifespan)
    try:
        output, _ = process.communicate(timeout=DEADLINE)
    finally:
        process.kill()
    assert process.returncode != 0, output
    assert f"guardrail cannot start: {broken_policy_file}: 4 problems" in output
    for key in PROBLEMS:
        assert f"  {key}: " in output
    assert "Application startup failed. Exiting." in output
    assert "appears unsupported" not in output
    assert "Traceback" not in output


def test_uvicorn_without_lifespan_answers_503_naming_the_problem(
    tmp_path: Path, broken_policy_file: Path, unused_port: int
) -> None:
    (tmp_path / "service.py").write_text(SERVICE.format(policy=str(broken_policy_file)), encoding="utf-8")
    process = uvicorn(tmp_path, unused_port, "off")
    try:
        response = first_answer(f"http://127.0.0.1:{unused_port}/hello", process)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"].startswith(f"guardrail cannot start: {broken_policy_file}: 4 problems")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=DEADLINE)
    assert "Traceback" not in output
    assert f"guardrail cannot start: {broken_policy_file}: 4 problems" in output  # the log line, with each problem
    for key in PROBLEMS:
        assert f"  {key}: " in output


def first_answer(url: str, process: subprocess.Popen[str]) -> httpx.Response:
    """GET `url` once the server listens (it is polled until then, while the process lives)."""
    end = time.monotonic() + DEADLINE
    while True:
        try:
            return httpx.get(url, timeout=DEADLINE)
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > end:
                raise
            time.sleep(0.05)
