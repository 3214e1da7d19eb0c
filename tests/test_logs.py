"""JSON logs and the metrics app, as an SRE reads them (issue 5)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.logs import configure_logging, user_hash
from guardrail.web import metrics_app
from tests.conftest import ClientFactory, make_policy
from tests.upstream import Upstream


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    configure_logging("info")  # after capsys: the handler writes to the captured stderr
    yield
    logger = logging.getLogger("guardrail")
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.mark.usefixtures("json_logs")
async def test_one_json_line_per_guarded_request_without_personal_data(
    client_for: ClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = client_for(GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry()))
    capsys.readouterr()  # the line the middleware logs at start
    headers = {"x-user-id": "alice@example.com", "cookie": "euconsent-v2=CPSECRET; session=s3cr3t"}
    response = await client.get("/recommendations?q=private-search", headers=headers)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["message"] == "guarded request"
    assert entry["level"] == "info"
    assert entry["route"] == "/recommendations"
    assert entry["outcome"] == "enforced"
    assert entry["hidden"] == int(response.headers["guardrail-hidden"])
    assert entry["decision"] == response.headers["guardrail-decision"]
    assert entry["duration_ms"] >= entry["overhead_ms"] >= 0
    assert entry["user"] == user_hash("alice@example.com")
    for secret in ("alice@example.com", "CPSECRET", "s3cr3t", "private-search"):
        assert secret not in lines[0]


@pytest.mark.parametrize("pure_python", [False, True])
@pytest.mark.usefixtures("json_logs")
def test_the_start_line_says_which_loop_runs(
    pure_python: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator sees from the logs whether the C loop runs; the slower Python loop as a warning."""
    import guardrail.middleware

    monkeypatch.setattr(guardrail.middleware, "ACCELERATED", not pure_python)
    GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry())
    (line,) = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert line["version"] == guardrail.__version__
    assert line["accelerated"] is (not pure_python)
    if pure_python:
        assert line["level"] == "warning"
        assert "runs in Python" in line["message"]
        assert "docs/install.md" in line["message"]
    else:
        assert line["level"] == "info"
        assert line["message"] == f"guardrail {guardrail.__version__} started; the per-item loop runs in C"


def test_the_user_hash_is_keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_LOG_KEY", "one")
    first = user_hash("alice")
    monkeypatch.setenv("GUARDRAIL_LOG_KEY", "two")
    assert user_hash("alice") != first
    assert user_hash("alice") == user_hash("alice") != user_hash("bob")


async def test_the_metrics_app_serves_the_registry(client_for: ClientFactory) -> None:
    registry = CollectorRegistry()
    guarded = GuardrailMiddleware(Upstream(), policy=make_policy(), registry=registry)
    await client_for(guarded).get("/recommendations", headers={"x-user-id": "alice"})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=metrics_app(registry)), base_url="http://m"
    ) as client:
        response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert 'guardrail_requests_total{outcome="enforced",route="/recommendations"} 1.0' in response.text
    assert "alice" not in response.text
