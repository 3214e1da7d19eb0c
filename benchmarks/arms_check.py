"""The deciding arms of the suite, built in process and asked once: do they decide alike?

The comparison in suite.py is fair only if the naive arm and the Rego arm hide and explain the same
items as the guardrail. This serves one request through each (httpx over ASGI, no server) for a
user with the given controls, and returns what each kept and hid; `suite.py --dry-run` and the
tests compare them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from apps import (
    BENCH_CONTROLS,
    BENCH_USER,
    grant_consent,
    make_guarded,
    make_naive,
    make_rego,
    recommendation_document,
    warm,
)
from peers.naive import store_controls
from starlette.types import ASGIApp


@dataclass(frozen=True, slots=True)
class Answer:
    kept: list[str]  # ids, in order
    hidden: list[str]
    explanations: dict[str, Any]  # id -> the explanation attached to the kept item
    decision: str | None  # the guardrail's decision id (for its receipt), None for the peers


async def ask(app: ASGIApp, items: list[str], user: str = BENCH_USER) -> Answer:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        response = await client.get("/recommendations", headers={"x-user-id": user})
    response.raise_for_status()
    document = response.json()
    kept = [item["id"] for item in document["items"]]
    return Answer(
        kept=kept,
        hidden=[item for item in items if item not in set(kept)],
        explanations={item["id"]: item["explanation"] for item in document["items"]},
        decision=response.headers.get("guardrail-decision"),
    )


async def decisions_by_arm(
    size: int, redis_url: str, controls: dict[str, Any] | None = None, user: str = BENCH_USER
) -> dict[str, Answer]:
    """What the guardrail (memory and Redis stores), the naive arm and the Rego arm keep and hide of
    the benchmark's `size`-item body, for `user` with `controls` (the benchmark's by default)."""
    controls = BENCH_CONTROLS if controls is None else controls
    items = [item["id"] for item in recommendation_document(size)["items"]]
    answers = {}
    for name, store in (("guardrail", "memory://"), ("redis", redis_url)):
        guarded = make_guarded(size, store=store, users=[])
        await grant_consent(guarded, user, controls)
        await warm(guarded.store, user)
        answers[name] = await ask(guarded, items, user)
        await guarded.store.aclose()
    naive = make_naive(size, redis_url=redis_url, controls={})
    try:
        await store_controls(naive.state.redis, {user: controls})
        answers["naive"] = await ask(naive, items, user)
    finally:
        await naive.state.redis.aclose()
    answers["rego"] = await ask(make_rego(size, controls={user: controls}), items, user)
    return answers
