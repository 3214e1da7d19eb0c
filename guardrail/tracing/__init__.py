"""Traces (the `otel` extra, docs/operations.md "Traces"): whether to trace, decided once at start.

This module imports nothing of OpenTelemetry. Only when tracing is on is `guardrail.tracing.spans`
imported, and with it the OpenTelemetry API; a middleware or a sidecar that does not trace holds
`None` where a `Tracing` would be, and each request pays one `is None` test.

`GUARDRAIL_TRACING` decides: `off`, `otel` (on; without the extra, the start fails naming it), or
`auto` (the default): on when OpenTelemetry is configured the usual way, that is an `OTEL_TRACES_EXPORTER`
other than `none` or an OTLP endpoint in the environment (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), or a tracer provider the host application has already set;
never with `OTEL_SDK_DISABLED=true`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from guardrail.errors import GuardrailError
from guardrail.optional import load

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider as TracerProvider

    from guardrail.tracing.spans import Tracing as Tracing

logger = logging.getLogger("guardrail")

SWITCH = "GUARDRAIL_TRACING"
MODES = ("auto", "otel", "off")
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_warned = False


def mode() -> str:
    """`GUARDRAIL_TRACING`, checked: `auto` when unset."""
    chosen = os.environ.get(SWITCH, "").strip().lower() or "auto"
    if chosen not in MODES:
        raise GuardrailError(f"{SWITCH}={chosen!r} is not a tracing mode: use auto, otel or off")
    return chosen


def configured() -> bool:
    """Whether the OTEL_* environment asks for traces to be exported."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or any(env.get(name, "").strip() for name in _ENDPOINTS)


def wanted() -> bool:
    """Whether to trace, by `GUARDRAIL_TRACING` and the OTEL_* environment (see the module's doc)."""
    chosen = mode()
    if chosen != "auto":
        return chosen == "otel"
    return configured() or _host_provider_set()


def _host_provider_set() -> bool:
    # Looked up, never imported: an application that set a tracer provider has imported the API already.
    trace: Any = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def tracing_for(provider: TracerProvider | None = None) -> Tracing | None:
    """The spans to make, or None when not tracing. `provider`: the tracer provider to use, which turns
    tracing on whatever the environment says; without it, `wanted()` decides and the global provider
    (the one the host application or `guardrail serve` set) is used."""
    global _warned
    if provider is None and not wanted():
        return None
    if provider is None and mode() == "auto":
        # Configured for the whole container perhaps, without the extra here: say so once, and go on.
        try:
            load("opentelemetry.trace", extra="otel", feature="tracing")
        except GuardrailError as exc:
            if not _warned:
                _warned = True
                logger.warning("OpenTelemetry is configured but not traced: %s", exc)
            return None
    load("opentelemetry.trace", extra="otel", feature=f"tracing ({SWITCH}=otel)")
    from guardrail.tracing.spans import Tracing

    return Tracing(provider)


def check_for_serve() -> None:
    """What `guardrail serve` checks before it starts its workers: the switch, and when tracing is
    wanted, the extra (GUARDRAIL_TRACING=otel only) and the exporter settings. GuardrailError says what to fix."""
    if not wanted():
        return
    if mode() == "otel":
        load("opentelemetry.sdk.trace", extra="otel", feature=f"tracing ({SWITCH}=otel)")
    from guardrail.tracing.sdk import exporters

    exporters()


def install_for_serve() -> Callable[[], object] | None:
    """In a `guardrail serve` worker: when tracing is wanted and the extra is installed, the SDK's
    tracer provider from the OTEL_* environment, as the global one (`guardrail.tracing.sdk`).
    Returns what exports the last spans and stops, for the worker's shutdown (blocking: run it in a thread)."""
    if not wanted():
        return None
    try:
        load("opentelemetry.sdk.trace", extra="otel", feature="tracing")
    except GuardrailError:
        if mode() == "otel":
            raise
        return None  # the middleware says once that it does not trace
    from guardrail.tracing.sdk import install_provider

    return install_provider()
