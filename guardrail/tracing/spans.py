"""The spans guardrail makes, on the OpenTelemetry API (docs/operations.md "Traces"). Imported only
when tracing is on (`guardrail.tracing.tracing_for`).

- `guardrail.check`: one guarded request, from the moment the guardrail has it to the annotated
  response (the user's state, the app or upstream, deciding and annotating); its attributes say what
  was decided: `guardrail.decision` (the decision id), `guardrail.outcome`, `guardrail.hidden`, and
  the route template as `http.route`.
- `guardrail.store`: one call to the store for a request (`guardrail.store.op`: load, patch, ...).
- `guardrail.upstream`: the sidecar's request to the upstream, until its answer's status and headers
  have come (`http.response.status_code`); the upstream is sent this span's `traceparent`.

A span nests under the current one (an ASGI instrumentation's, or the guardrail's own); when there is
none, it continues the `traceparent` (and `tracestate`) the client sent. No span carries a user id, a
raw path or a query.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, get_global_textmap, inject
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Span, SpanKind, StatusCode

from guardrail._version import __version__

CHECK = "guardrail.check"
STORE = "guardrail.store"
UPSTREAM = "guardrail.upstream"

RawHeaders = Iterable[tuple[bytes, bytes]]


class _ScopeHeaders(Getter[RawHeaders]):
    """Reads an ASGI scope's headers (lowercase names, as ASGI gives them)."""

    def get(self, carrier: RawHeaders, key: str) -> list[str] | None:
        name = key.encode("latin-1")
        return [value.decode("latin-1") for found, value in carrier if found == name] or None

    def keys(self, carrier: RawHeaders) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier]


class _HeaderList(Setter[list[tuple[bytes, bytes]]]):
    def set(self, carrier: list[tuple[bytes, bytes]], key: str, value: str) -> None:
        carrier.append((key.encode("latin-1"), value.encode("latin-1")))


_GETTER = _ScopeHeaders()
_SETTER = _HeaderList()


class Tracing:
    """The guardrail's spans, made by the tracer of `provider` (the global tracer provider by default)."""

    __slots__ = ("tracer",)

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("guardrail", __version__, tracer_provider=provider)

    @staticmethod
    def parent(headers: RawHeaders) -> Context | None:
        """None (the current context) when a span is current, else the context the client's headers carry."""
        if trace.get_current_span().get_span_context().is_valid:
            return None
        return extract(headers, getter=_GETTER)

    @staticmethod
    def in_a_trace() -> bool:
        return trace.get_current_span().get_span_context().is_valid

    # -- guardrail.check ----------------------------------------------------------------------

    @contextmanager
    def checking(self, scope: Mapping[str, Any], route: str) -> Iterator[Span]:
        """The span of one guarded request, current while it runs."""
        parent = self.parent(scope["headers"])
        with self.tracer.start_as_current_span(
            CHECK,
            context=parent,
            # The first span of this process for the request: the server's side of the client's call.
            kind=SpanKind.INTERNAL if parent is None else SpanKind.SERVER,
            attributes={"http.route": route, "http.request.method": scope["method"]},
        ) as span:
            yield span

    @staticmethod
    def decided(span: Span, decision: str, outcome: str, hidden: int) -> None:
        span.set_attributes({"guardrail.decision": decision, "guardrail.outcome": outcome, "guardrail.hidden": hidden})

    # -- guardrail.store ----------------------------------------------------------------------

    def store_call(self, op: str, system: str) -> AbstractContextManager[Span]:
        """The span of one store call (a failure is recorded on it, and it says ERROR)."""
        return self.tracer.start_as_current_span(
            STORE, kind=SpanKind.CLIENT, attributes={"guardrail.store.op": op, "db.system.name": system}
        )

    # -- guardrail.upstream -------------------------------------------------------------------

    def upstream(self, scope: Mapping[str, Any], headers: list[tuple[bytes, bytes]], host: str, port: int) -> Span:
        """Start the span of a request to the upstream, and put its context in `headers` in place of
        the client's (what the propagators write: `traceparent`, `tracestate`, `baggage`)."""
        parent = self.parent(scope["headers"])
        span = self.tracer.start_span(
            UPSTREAM,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": scope["method"], "server.address": host, "server.port": port},
        )
        fields = {name.encode("latin-1") for name in get_global_textmap().fields}
        headers[:] = [header for header in headers if header[0] not in fields]
        inject(headers, context=trace.set_span_in_context(span, parent), setter=_SETTER)
        return span

    @staticmethod
    def answered(span: Span, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:  # a client span's error, by the HTTP conventions
            span.set_status(StatusCode.ERROR)
            span.set_attribute("error.type", str(status))
        span.end()

    @staticmethod
    def failed(span: Span, kind: str) -> None:
        """The upstream gave no answer: `kind` as in guardrail_upstream_errors_total."""
        span.set_attribute("error.type", kind)
        span.set_status(StatusCode.ERROR, f"upstream {kind} error")
        span.end()
