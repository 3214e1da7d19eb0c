"""Store calls in a trace: the Redis store's round trip for a request is a span under the guardrail's,
a cached state costs none, and the background writes start no traces of their own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from uuid import uuid4

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.store.redis import FLUSH_EVERY, RedisStore
from tests.conftest import ClientFactory, make_policy
from tests.sidecar.servers import free_port
from tests.store.redis_servers import RedisServer
from tests.tracing.memory import Spans, parent_id, span_id
from tests.upstream import Upstream


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def guarded(spans: Spans, store: str) -> GuardrailMiddleware:
    # A budget a busy machine keeps: the spans, not the 20 ms budget, are what is tested here.
    return GuardrailMiddleware(
        Upstream(),
        policy=make_policy(store_timeout_ms=2000),
        store=store,
        registry=CollectorRegistry(),
        tracer_provider=spans.provider,
    )


async def test_loading_a_users_state_from_redis_is_a_span_under_the_check(
    client_for: ClientFactory, spans: Spans, redis_url: str
) -> None:
    app = guarded(spans, redis_url)
    store = app.runtime.store
    assert isinstance(store, RedisStore)
    client = client_for(app)
    user = {"x-user-id": f"test-{uuid4().hex}"}
    try:
        # The first request starts the store's background work (the invalidation channel, the records'
        # writer): they outlive it, and must not write into its trace.
        await client.get("/recommendations", headers=user)
        await asyncio.wait_for(store.subscribed.wait(), 10)  # the cache is trusted (and was emptied)
        await client.get("/recommendations", headers=user)  # one round trip, then cached
        await client.get("/recommendations", headers=user)  # cached: none
        await asyncio.sleep(FLUSH_EVERY * 4)  # the decision records are written meanwhile
    finally:
        await app.runtime.close()

    checks = sorted(spans.named("guardrail.check"), key=lambda span: span.start_time or 0)
    loads = sorted(spans.named("guardrail.store"), key=lambda span: span.start_time or 0)
    assert [parent_id(load) for load in loads] == [span_id(check) for check in checks[:2]]
    for load in loads:
        assert load.attributes is not None
        assert dict(load.attributes) == {"guardrail.store.op": "load", "db.system.name": "redis"}
        assert (load.kind, load.status.status_code) == (SpanKind.CLIENT, StatusCode.UNSET)


async def test_a_store_that_does_not_answer_is_an_error_span_and_the_request_degraded(
    client_for: ClientFactory, spans: Spans
) -> None:
    app = guarded(spans, f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    try:
        await client_for(app).get("/recommendations", headers={"x-user-id": "alice"})
    finally:
        await app.runtime.close()
    load = spans.one("guardrail.store")
    assert load.status.status_code == StatusCode.ERROR
    assert "alice" not in str(load.status.description) + str(load.events)
    check = spans.one("guardrail.check")
    assert check.attributes is not None
    assert check.attributes["guardrail.outcome"] == "degraded"
