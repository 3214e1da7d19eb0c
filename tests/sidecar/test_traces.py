"""The sidecar in a trace, over real sockets: the client's trace goes on through the guardrail to the
upstream, which is sent the `traceparent` of the guardrail's own request to it; and `guardrail serve`
exports its spans where the OTEL_* environment says."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import SpanKind, StatusCode

from tests.sidecar.conftest import StartSidecar
from tests.sidecar.servers import HOST, RecordingUpstream, ServeProcess, free_port, write_policy
from tests.tracing.memory import (  # the fixture `spans` too
    CLIENT_SPAN,
    CLIENT_TRACE,
    TRACEPARENT,
    Spans,
    parent_id,
    span_id,
    spans,
    trace_id,
)

__all__ = ["spans"]

CLIENT = {"x-user-id": "alice", "traceparent": TRACEPARENT, "tracestate": "vendor=opaque"}


def traceparent_parts(value: str) -> tuple[str, str]:
    """(trace id, parent span id) of a W3C traceparent."""
    version, trace, parent, flags = value.split("-")
    assert (version, len(trace), len(parent), len(flags)) == ("00", 32, 16, 2)
    return trace, parent


async def test_the_upstream_is_sent_the_traceparent_of_the_guardrails_request_in_the_clients_trace(
    start_sidecar: StartSidecar, upstream: RecordingUpstream, spans: Spans
) -> None:
    sidecar = await start_sidecar(tracer_provider=spans.provider)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        response = await client.get("/recommendations", headers=CLIENT)
    assert response.status_code == 200

    check = spans.one("guardrail.check")
    call = spans.one("guardrail.upstream")
    seen = upstream.seen[-1]
    (sent,) = seen.header("traceparent")  # one: the client's is replaced, not repeated
    assert traceparent_parts(sent) == (CLIENT_TRACE, span_id(call))
    assert seen.header("tracestate") == ["vendor=opaque"]
    # client's span -> guardrail.check -> guardrail.upstream -> the upstream's own spans
    assert (trace_id(check), parent_id(check)) == (CLIENT_TRACE, CLIENT_SPAN)
    assert (trace_id(call), parent_id(call)) == (CLIENT_TRACE, span_id(check))
    assert call.kind == SpanKind.CLIENT
    assert call.attributes is not None
    assert dict(call.attributes) == {
        "http.request.method": "GET",
        "server.address": HOST,
        "server.port": upstream.port,
        "http.response.status_code": 200,
    }
    assert check.attributes is not None
    assert check.attributes["guardrail.decision"] == response.headers["guardrail-decision"]
    assert check.attributes["guardrail.hidden"] == int(response.headers["guardrail-hidden"])


async def test_a_path_not_guarded_is_traced_to_the_upstream_too(
    start_sidecar: StartSidecar, upstream: RecordingUpstream, spans: Spans
) -> None:
    sidecar = await start_sidecar(tracer_provider=spans.provider)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        await client.get("/not/guarded", headers=CLIENT)
    call = spans.one("guardrail.upstream")
    assert spans.named("guardrail.check") == []
    assert (trace_id(call), parent_id(call)) == (CLIENT_TRACE, CLIENT_SPAN)
    assert traceparent_parts(upstream.seen[-1].header("traceparent")[0]) == (CLIENT_TRACE, span_id(call))


async def test_an_upstream_that_cannot_be_reached_is_an_error_span(start_sidecar: StartSidecar, spans: Spans) -> None:
    sidecar = await start_sidecar(f"http://{HOST}:{free_port()}", tracer_provider=spans.provider)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        response = await client.get("/recommendations", headers=CLIENT)
    assert response.status_code == 502
    call = spans.one("guardrail.upstream")
    assert call.status.status_code == StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["error.type"] == "ConnectError"
    check = spans.one("guardrail.check")
    assert check.attributes is not None
    assert check.attributes["guardrail.outcome"] == "upstream_error"


async def test_without_tracing_the_clients_traceparent_passes_through_untouched(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        await client.get("/recommendations", headers=CLIENT)
    assert upstream.seen[-1].header("traceparent") == [TRACEPARENT]


# -- guardrail serve, exporting to a collector -----------------------------------------------------


class Collector:
    """An OTLP/HTTP collector on a free port: keeps every span it is sent, by name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, dict[str, str]]] = []  # (name, trace id, resource attributes)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            collector.spans.append((span.name, span.trace_id.hex(), resource))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, free_port()), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"

    def __enter__(self) -> Collector:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


def test_guardrail_serve_exports_its_spans_where_the_otel_environment_says(
    tmp_path: Path, upstream: RecordingUpstream, collector: Collector
) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    serve = ServeProcess(
        "--config",
        str(policy),
        "--upstream",
        upstream.url,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url},
    )
    try:
        serve.wait_ready()
        response = httpx.get(f"{serve.url}/recommendations", headers=CLIENT, timeout=10)
        assert response.status_code == 200
    finally:
        # Stopped at once, well before the SDK's next batch (every 5 s): the worker sends it as it stops.
        serve.stop()
    names = {name for name, trace, _ in collector.spans if trace == CLIENT_TRACE}
    assert {"guardrail.check", "guardrail.upstream"} <= names, "\n".join(serve.lines)
    assert {resource["service.name"] for _, _, resource in collector.spans} == {"guardrail"}
    assert traceparent_parts(upstream.seen[-1].header("traceparent")[0])[0] == CLIENT_TRACE
    (line,) = serve.logs("guarded request")
    assert line["trace_id"] == CLIENT_TRACE


def test_guardrail_serve_refuses_an_exporter_it_does_not_have(tmp_path: Path, upstream: RecordingUpstream) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    serve = ServeProcess(
        "--config",
        str(policy),
        "--upstream",
        upstream.url,
        env={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "GUARDRAIL_TRACING": "otel"},
    )
    assert serve.process.wait(60) == 2
    serve.stop()
    assert serve.lines[-1] == (
        "guardrail serve: OTEL_EXPORTER_OTLP_PROTOCOL='grpc' is not available here: the otel extra sends OTLP over "
        "HTTP, set it to http/protobuf (and the endpoint to the collector's HTTP port, usually 4318)"
    )
