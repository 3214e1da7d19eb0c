"""The OpenTelemetry SDK for `guardrail serve`: each worker sets up its tracer provider from the OTEL_*
environment, as OpenTelemetry's own tools do (a middleware uses the provider its application set).

- `OTEL_TRACES_EXPORTER`: `otlp` (the default), `console`, or both, comma-separated.
- `otlp` sends OTLP over HTTP (`http/protobuf`, the one protocol the `otel` extra ships) to
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, else
  `http://localhost:4318/v1/traces`; headers, certificates, compression and timeout from their
  `OTEL_EXPORTER_OTLP_*` variables, read by the exporter.
- `OTEL_SERVICE_NAME` (default `guardrail`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`,
  `OTEL_PROPAGATORS` and `OTEL_BSP_*` as the SDK reads them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from guardrail.errors import GuardrailError
from guardrail.optional import require

EXPORTERS = ("otlp", "console")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def exporters() -> list[str]:
    """The exporters `OTEL_TRACES_EXPORTER` names, checked (GuardrailError saying what to set instead)."""
    names = [name.strip().lower() for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    names = [name for name in names if name and name != "none"]
    for name in names:
        if name not in EXPORTERS:
            raise GuardrailError(f"OTEL_TRACES_EXPORTER={name!r} is not available here: use otlp, console or none")
    if "otlp" in names:
        for variable in _PROTOCOLS:
            protocol = os.environ.get(variable, "").strip().lower()
            if protocol and protocol != "http/protobuf":
                raise GuardrailError(
                    f"{variable}={protocol!r} is not available here: the otel extra sends OTLP over HTTP, "
                    "set it to http/protobuf (and the endpoint to the collector's HTTP port, usually 4318)"
                )
            if protocol:
                break
    return names


def install_provider() -> Callable[[], object]:
    """Make the SDK's tracer provider from the environment and set it as the global one; returns its
    `shutdown`, which exports what is left (a worker stopped by a signal runs no `atexit` hook)."""
    names = exporters()
    require("otel", feature="tracing in guardrail serve")
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "guardrail"}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        # Exported from a thread of its own, in batches: a request never waits on the collector.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider.shutdown
