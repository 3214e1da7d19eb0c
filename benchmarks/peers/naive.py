"""The guardrail's checks written the naive way, as a team in a hurry would write them.

A Starlette `BaseHTTPMiddleware` that reads the whole response body, parses it with the standard
library's `json`, fetches the user's controls with one Redis `GET` per request (no local cache),
applies the same rules as `guardrail.rego` to every item in plain Python (no memo), writes the
explanations and serializes the body again. The rules are the ones listed in `guardrail.rego`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from redis import asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from guardrail.policy.models import Policy
from peers.policy_data import ROUTE, policy_data, user_data

KEY_PREFIX = "naive:controls:"
NO_CONTROLS: dict[str, Any] = user_data({})


def is_sensitive(rules: dict[str, Any], category: str) -> bool:
    parts = category.split(".")
    for depth in range(len(parts), 0, -1):
        marked = rules["sensitive"].get(".".join(parts[:depth]))
        if marked is not None:
            return bool(marked)
    return False


def under(category: str, topic: str) -> bool:
    return category == topic or category.startswith(topic + ".")


def decide(rules: dict[str, Any], user: dict[str, Any], item: dict[str, Any], now: float) -> dict[str, Any]:
    """{"action", "reasons", "explanation"} for one item."""
    signals = item.get("signals")
    if signals is None:
        signals = rules["default_signals"]
    categories = item.get("categories", [])
    reasons = set()
    for category in categories:
        for topic, until in user["muted"].items():
            if (until is None or until > now) and under(category, topic):
                reasons.add("topic_muted")
    sensitive = [c for c in categories if is_sensitive(rules, c)]
    score = 0
    if signals:
        known = []
        for signal in signals:
            info = rules["signals"].get(signal)
            if info is None:
                reasons.add("no_consent")  # no purpose anyone could have consented to
                continue
            known.append(info)
            purpose = info["purpose"]
            if user["consent"].get(purpose, rules["purposes"][purpose]["default"]) != "granted":
                reasons.add("no_consent")
            if user["personalization"] is False:
                reasons.add("personalization_off")
            if user["signals"].get(signal) is False:
                reasons.add("signal_off")
        for category in sensitive:
            if not any(on and under(category, topic) for topic, on in user["sensitive"].items()):
                reasons.add("sensitive_needs_opt_in")
        weights = rules["weights"]
        age = item.get("signal_age_seconds")
        score = weights["signal_sensitivity"] * max((info["sensitivity"] for info in known), default=3)
        if sensitive:
            score += weights["sensitive_category"]
        if age is not None and age < rules["fresh_seconds"]:
            score += weights["fresh_activity"]
        if item.get("inferred", False):
            score += weights["inferred"]
        if any(info["third_party"] for info in known):
            score += weights["third_party"]
        score = min(score, 100)
        if score >= rules["hide_at"]:
            reasons.add("too_invasive")
    if reasons:
        return {"action": "hide", "reasons": sorted(reasons), "explanation": None}
    action = "discreet" if sensitive or score >= rules["discreet_at"] else "keep"
    explanation = explain(rules, action, signals, item.get("inferred", False))
    return {"action": action, "reasons": [], "explanation": explanation}


def explain(rules: dict[str, Any], action: str, signals: Sequence[str], inferred: bool) -> dict[str, Any]:
    texts = rules["texts"]
    because: list[str] = []
    if not signals:
        text = texts["item.popular"]
    elif action == "discreet":
        text = texts["item.discreet"]
    else:
        because = list(dict.fromkeys(signals))
        labels = texts["list.and"].join(rules["signals"][s]["label"] for s in because)
        text = texts["item.inferred" if inferred else "item.because"].replace("{signals}", labels)
    return {"text": text, "because": because, "controls": rules["controls"]}


class NaiveGuard(BaseHTTPMiddleware):
    def __init__(self, app: Any, rules: dict[str, Any], redis: aioredis.Redis) -> None:
        super().__init__(app)
        self.rules = rules
        self.redis = redis

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        if request.url.path != ROUTE or response.headers.get("content-type") != "application/json":
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
        user_id = request.headers.get("x-user-id")
        raw = await self.redis.get(KEY_PREFIX + user_id) if user_id else None
        user = json.loads(raw) if raw is not None else NO_CONTROLS
        document = json.loads(body)
        now = time.time()
        kept = []
        hidden = 0
        # As the guardrail does: each kept item links to its own "why?" page.
        why = f"/guardrail/why/{secrets.token_hex(6)}/" if user_id else None
        for item in document["items"]:
            decision = decide(self.rules, user, item, now)
            if decision["action"] == "hide":
                hidden += 1
            else:
                explanation = decision["explanation"]
                if why is not None:
                    explanation = {**explanation, "why": why + quote(str(item["id"]), safe="")}
                item["explanation"] = explanation
                kept.append(item)
        document["items"] = kept
        document["guardrail"] = {
            "kept": len(kept),
            "hidden": hidden,
            "notice": f"We hid {hidden} suggestions." if hidden else None,
        }
        headers = {k: v for k, v in response.headers.items() if k != "content-length"}
        headers["guardrail-hidden"] = str(hidden)
        return Response(json.dumps(document), status_code=response.status_code, headers=headers)


async def store_controls(redis: aioredis.Redis, controls: dict[str, dict[str, Any]]) -> None:
    """Each user's controls (a body as the guardrail's API takes it) under `naive:controls:<user>`."""
    await redis.mset({KEY_PREFIX + user: json.dumps(user_data(body)) for user, body in controls.items()})


def naive_app(
    routes: Sequence[BaseRoute], policy: Policy, redis_url: str, controls: dict[str, dict[str, Any]]
) -> Starlette:
    """The routes behind `NaiveGuard`; the users' controls are written to Redis on start-up."""
    redis = aioredis.Redis.from_url(redis_url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store_controls(redis, controls)
        yield
        await redis.aclose()

    middleware = [Middleware(NaiveGuard, rules=policy_data(policy), redis=redis)]
    app = Starlette(routes=list(routes), middleware=middleware, lifespan=lifespan)
    app.state.redis = redis  # for callers that run no lifespan (tests): they write controls and close it
    return app
