"""When the guardrail traces, each case in a fresh interpreter: nothing of OpenTelemetry is imported
unless tracing is on, it is on when OpenTelemetry is configured the usual way, and a switch that cannot
be honoured says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from guardrail.optional import DISTRIBUTION
from tests.conftest import ROOT
from tests.test_extras import run_without

# A guarded request through the middleware, a sidecar built (not served), and a JSON log line; then
# what was traced and which OpenTelemetry modules were loaded, as JSON on stdout.
SERVE_ONE = """
import asyncio, json, logging, sys
from prometheus_client import CollectorRegistry
from guardrail import GuardrailMiddleware
from guardrail.logs import configure_logging
from guardrail.sidecar import build_sidecar

async def upstream(scope, receive, send):
    body = json.dumps({"items": [{"id": "a", "categories": ["movies"], "signals": []}]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})

async def main():
    configure_logging("warning")
    app = GuardrailMiddleware(upstream, policy="config/guardrail.yaml", store="memory://", registry=CollectorRegistry())
    build_sidecar("config/guardrail.yaml", "http://127.0.0.1:9", store="memory://", registry=CollectorRegistry())
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "GET", "path": "/recommendations", "raw_path": b"/recommendations",
             "query_string": b"", "headers": [(b"x-user-id", b"alice")], "client": ("127.0.0.1", 1),
             "server": ("t", 80), "scheme": "http", "http_version": "1.1", "root_path": ""}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent
    logging.getLogger("guardrail").warning("a line")
    traced = [span.name for span in exporter.get_finished_spans()] if "exporter" in globals() else None
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
    print(json.dumps({"traced": traced, "loaded": loaded}))

asyncio.run(main())
"""

# What an application does that configured OpenTelemetry itself, before it builds the guardrail.
HOST_PROVIDER = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
"""
# The same, in `main` after the guardrail is built.
HOST_PROVIDER_LATE = textwrap.indent(HOST_PROVIDER.replace("exporter = ", "global exporter; exporter = "), "    ")


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GUARDRAIL_"))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**clean, **env},
        check=False,
    )


def outcome(done: subprocess.CompletedProcess[str]) -> dict[str, list[str] | None]:
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str] | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "env",
    [
        {},  # OpenTelemetry not configured: the default
        {"GUARDRAIL_TRACING": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    ],
)
def test_not_tracing_imports_nothing_of_opentelemetry(env: dict[str, str]) -> None:
    assert outcome(run(SERVE_ONE, **env)) == {"traced": None, "loaded": []}


def test_a_tracer_provider_the_application_set_is_used() -> None:
    result = outcome(run(HOST_PROVIDER + SERVE_ONE))
    assert result["traced"] == ["guardrail.check"]


def test_tracing_off_wins_over_the_applications_provider() -> None:
    result = outcome(run(HOST_PROVIDER + SERVE_ONE, GUARDRAIL_TRACING="off"))
    assert result["traced"] == []


@pytest.mark.parametrize(
    "env", [{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, {"GUARDRAIL_TRACING": "otel"}]
)
def test_configured_by_the_environment_the_middleware_traces_on_the_global_provider(env: dict[str, str]) -> None:
    """The application may set its provider after building the guardrail: the spans go to it then."""
    late = SERVE_ONE.replace(
        "    await app(scope, receive, send)\n", HOST_PROVIDER_LATE + "    await app(scope, receive, send)\n"
    )
    result = outcome(run(late, **env))
    assert result["traced"] == ["guardrail.check"]


def test_configured_without_the_extra_it_serves_untraced_and_says_so_once() -> None:
    code = "import os; os.environ['OTEL_EXPORTER_OTLP_ENDPOINT'] = 'http://127.0.0.1:4318'\n" + SERVE_ONE
    done = run_without(["otel"], code)
    assert outcome(done) == {"traced": None, "loaded": []}
    (warning,) = [json.loads(line) for line in done.stderr.splitlines() if "not traced" in line]
    assert warning["message"].startswith("OpenTelemetry is configured but not traced: tracing needs the `otel` extra")
    assert f"pip install '{DISTRIBUTION}[otel]'" in warning["message"]


def test_tracing_asked_for_without_the_extra_fails_at_start_naming_it() -> None:
    done = run_without(["otel"], "import os; os.environ['GUARDRAIL_TRACING'] = 'otel'\n" + SERVE_ONE)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "guardrail.errors.MissingExtra: tracing (GUARDRAIL_TRACING=otel) needs the `otel` extra, which is not "
        f"installed (no module 'opentelemetry'): pip install '{DISTRIBUTION}[otel]'"
    )


def test_an_unknown_switch_value_names_the_ones_there_are() -> None:
    done = run(SERVE_ONE, GUARDRAIL_TRACING="jaeger")
    assert done.stderr.strip().splitlines()[-1] == (
        "guardrail.errors.GuardrailError: GUARDRAIL_TRACING='jaeger' is not a tracing mode: use auto, otel or off"
    )
