"""Reviewer decisions on many replicas (docs/review.md): two middlewares on one real Redis, each with its own
store connection, as two processes would be. A decision made on one applies on the other without a
restart, survives a policy reload and a restart, and a later decision undoes it everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from guardrail.store import create_store
from guardrail.store.redis import RedisStore
from tests.conftest import ClientFactory
from tests.review.conftest import REVIEWER, Service, middleware, review_policy

WAIT = 5.0  # seconds, for a busy machine; the figure in docs/review.md is measured by benchmarks/review_propagation.py


def heard(service: Service) -> asyncio.Event:
    """Set when the replica hears of a change of the decisions in force (after it serves them: its
    middleware listens first)."""
    changed = asyncio.Event()
    service.store.review_queue().on_change(lambda _: changed.set())
    return changed


@pytest.fixture
async def replicas(redis_url: str, client_for: ClientFactory) -> AsyncIterator[tuple[Service, Service]]:
    stores = [create_store(redis_url, timeout=1.0) for _ in range(2)]
    try:
        services = []
        for store in stores:
            app = middleware(store)
            await app.runtime.start()  # as the lifespan does: connects and reads the decisions in force
            assert isinstance(store, RedisStore)
            await asyncio.wait_for(store.subscribed.wait(), WAIT)
            services.append(Service(app, client_for(app)))
        yield services[0], services[1]
    finally:
        for store in stores:
            await store.aclose()


async def test_a_decision_on_one_replica_applies_on_the_other(
    replicas: tuple[Service, Service], redis_url: str, client_for: ClientFactory
) -> None:
    one, two = replicas
    assert "m1" in await two.shown()
    two_heard = heard(two)
    one.store.review_queue().note_report("/recommendations", "m1", "offensive")
    entry = await one.entry("reported_item", "m1")
    assert (await one.decide(entry["id"], {"decision": "block", "note": "abusive"})).status_code == 200
    assert "m1" not in await one.shown()  # the replica that decided: at once

    await asyncio.wait_for(two_heard.wait(), WAIT)
    assert "m1" not in await two.shown()
    # A reload of the policy keeps the reviewers' decisions.
    two.app.use_policy(review_policy(policy_id="reloaded"))
    assert "m1" not in await two.shown()
    # So does a restart: a new replica reads them before its first request.
    store = create_store(redis_url, timeout=1.0)
    try:
        app = middleware(store)
        await app.runtime.start()
        assert "m1" not in await Service(app, client_for(app)).shown()
    finally:
        await store.aclose()
    # A later decision, made on the other replica, undoes it everywhere.
    one_heard = heard(one)
    assert (await two.decide(entry["id"], {"decision": "dismiss", "note": "appeal upheld"})).status_code == 200

    await asyncio.wait_for(one_heard.wait(), WAIT)
    assert "m1" in await one.shown()
    audit = [a for a in await one.audit() if a["entry"] == entry["id"]]
    assert [(a["decision"], a["reviewer"]) for a in audit] == [("block", REVIEWER), ("dismiss", REVIEWER)]
