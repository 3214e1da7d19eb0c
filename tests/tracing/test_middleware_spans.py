"""The middleware's spans, as an SRE follows a request in a trace viewer: what was decided, under which
parent, and the log line that goes with it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from guardrail import GuardrailMiddleware
from guardrail.logs import configure_logging
from tests.conftest import ClientFactory, make_policy
from tests.tracing.memory import CLIENT_SPAN, CLIENT_TRACE, TRACEPARENT, Spans, parent_id, span_id, trace_id
from tests.upstream import Upstream

ALICE = {"x-user-id": "alice"}


def guarded(spans: Spans, upstream: Upstream | None = None) -> GuardrailMiddleware:
    return GuardrailMiddleware(
        upstream or Upstream(),
        policy=make_policy(),
        registry=CollectorRegistry(),
        tracer_provider=spans.provider,
    )


async def test_a_guarded_request_is_a_span_saying_what_was_decided_under_the_clients_trace(
    client_for: ClientFactory, spans: Spans
) -> None:
    upstream = Upstream()
    client = client_for(guarded(spans, upstream))
    response = await client.get("/recommendations", headers={**ALICE, "traceparent": TRACEPARENT})
    assert response.status_code == 200

    check = spans.one("guardrail.check")
    assert check.attributes is not None
    assert dict(check.attributes) == {
        "http.route": "/recommendations",
        "http.request.method": "GET",
        "guardrail.decision": response.headers["guardrail-decision"],
        "guardrail.outcome": "enforced",
        "guardrail.hidden": int(response.headers["guardrail-hidden"]),
    }
    assert int(response.headers["guardrail-hidden"]) > 0  # the attribute counts something real
    # The client's trace goes on: same trace id, the client's span as the parent, this side of its call.
    assert (trace_id(check), parent_id(check), check.kind) == (CLIENT_TRACE, CLIENT_SPAN, SpanKind.SERVER)
    assert check.parent is not None and check.parent.is_remote
    # The app behind it runs inside the span, and is told nothing new: the client's header reaches it as sent.
    assert upstream.headers_seen()["traceparent"] == TRACEPARENT
    # Nothing of the user or the request's query is in the span.
    assert "alice" not in json.dumps(dict(check.attributes))


async def test_without_a_traceparent_a_request_starts_a_trace(client_for: ClientFactory, spans: Spans) -> None:
    client = client_for(guarded(spans))
    await client.get("/recommendations", headers=ALICE)
    check = spans.one("guardrail.check")
    assert check.parent is None and check.kind == SpanKind.SERVER


async def test_a_shadow_request_says_shadow_and_paths_not_guarded_make_no_span(
    client_for: ClientFactory, spans: Spans
) -> None:
    app = GuardrailMiddleware(
        Upstream(), policy=make_policy(mode="shadow"), registry=CollectorRegistry(), tracer_provider=spans.provider
    )
    client = client_for(app)
    await client.get("/recommendations", headers=ALICE)
    await client.get("/somewhere/else", headers=ALICE)
    await client.get("/guardrail/healthz")
    check = spans.one("guardrail.check")
    assert check.attributes is not None
    assert check.attributes["guardrail.outcome"] == "shadow"


async def test_an_unreadable_upstream_body_is_an_upstream_error_on_the_span(
    client_for: ClientFactory, spans: Spans
) -> None:
    client = client_for(guarded(spans, Upstream(body=b"{not json")))
    response = await client.get("/recommendations", headers=ALICE)
    assert response.status_code == 502
    check = spans.one("guardrail.check")
    assert check.attributes is not None
    assert (check.attributes["guardrail.outcome"], check.attributes["guardrail.hidden"]) == ("upstream_error", 0)


async def test_under_an_instrumented_server_the_check_nests_in_its_span(
    client_for: ClientFactory, spans: Spans
) -> None:
    """An ASGI instrumentation in front (here, the least one: a server span made current around the
    app) already continued the client's trace: the guardrail's span is its child, not its sibling."""
    tracer = spans.provider.get_tracer("the application's instrumentation")
    middleware = guarded(spans)

    async def instrumented(scope: Scope, receive: Receive, send: Send) -> None:
        with tracer.start_as_current_span("GET /recommendations", kind=SpanKind.SERVER):
            await middleware(scope, receive, send)

    await client_for(instrumented).get("/recommendations", headers={**ALICE, "traceparent": TRACEPARENT})
    server = spans.one("GET /recommendations")
    check = spans.one("guardrail.check")
    assert parent_id(check) == span_id(server)
    assert trace_id(check) != CLIENT_TRACE  # the server span started its own trace: the guardrail follows it
    assert check.kind == SpanKind.INTERNAL


async def test_an_app_that_fails_leaves_an_error_span(client_for: ClientFactory, spans: Spans) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("the recommender fell over")

    client = client_for(guarded(spans, broken))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        await client.get("/recommendations", headers=ALICE)
    check = spans.one("guardrail.check")
    assert check.status.status_code == StatusCode.ERROR
    assert [event.name for event in check.events] == ["exception"]


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    configure_logging("info")  # after capsys: the handler writes to the captured stderr
    yield
    logger = logging.getLogger("guardrail")
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.mark.usefixtures("json_logs")
async def test_the_log_line_of_a_traced_request_carries_its_trace_and_span_ids(
    client_for: ClientFactory, spans: Spans, capsys: pytest.CaptureFixture[str]
) -> None:
    client = client_for(guarded(spans))
    capsys.readouterr()  # the start line: no span then
    await client.get("/recommendations", headers={**ALICE, "traceparent": TRACEPARENT})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    (entry,) = [line for line in lines if line["message"] == "guarded request"]
    check = spans.one("guardrail.check")
    assert (entry["trace_id"], entry["span_id"]) == (CLIENT_TRACE, span_id(check))


@pytest.mark.usefixtures("json_logs")
async def test_a_line_outside_any_span_has_no_trace_id(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("guardrail").warning("nothing traced here")
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert "trace_id" not in entry and "span_id" not in entry
