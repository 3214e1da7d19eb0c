"""The demo: the service behind `GuardrailMiddleware`, with five users in different states."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Mount

from guardrail.controls import validate_patch
from guardrail.demo.service import service
from guardrail.middleware import GuardrailMiddleware
from guardrail.policy.loading import load_policy
from guardrail.policy.models import Policy
from guardrail.state import format_time


def demo_policy_path() -> Path:
    """The packaged copy of config/guardrail.yaml, or the file itself in a source checkout."""
    packaged = resources.files("guardrail.demo").joinpath("guardrail.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "config" / "guardrail.yaml"


def demo_users(now: datetime) -> dict[str, tuple[str, dict[str, Any]]]:
    """user → (what they show, their controls as a merge patch)."""
    granted = {"personalization": "granted"}
    return {
        "alice": ("said yes to personal picks", {"consent": granted}),
        "bob": ("was never asked: purpose defaults (denied) apply", {}),
        "carol": ("is 15 (x-user-age: 15): minor protection", {"consent": granted}),
        "dan": (
            "muted gambling, snoozed dating for 7 days, turned off exact location",
            {
                "consent": granted,
                "muted": {
                    "gambling": {"until": None},
                    "dating": {"until": format_time(now + timedelta(days=7))},
                },
                "signals": {"location_precise": False},
            },
        ),
        "erin": (
            "opted into health topics and reads in Korean",
            {"consent": granted, "sensitive": {"health": True}, "locale": "ko"},
        ),
    }


def build_demo_app(policy: Policy | None = None, registry: CollectorRegistry | None = None) -> GuardrailMiddleware:
    policy = policy or load_policy(demo_policy_path())
    guarded = GuardrailMiddleware(service(), policy=policy, store="memory://", registry=registry)

    @asynccontextmanager
    async def seed(app: Starlette) -> AsyncIterator[None]:
        now = datetime.now(UTC)
        for user, (_, controls) in demo_users(now).items():
            if controls:
                patch = validate_patch(policy, controls, now)
                await guarded.store.patch(user, patch, if_match=None, now=now)
        yield

    # The outer Starlette app only runs the seeding at startup; every request goes to the guardrail.
    guarded.app = Starlette(routes=[Mount("/", app=service())], lifespan=seed)
    return guarded


def instructions(base: str, policy: Policy) -> str:
    users = demo_users(datetime.now(UTC))
    bob_patch = {"consent": {"personalization": "granted"}, "muted": {"sports": {"until": None}}}
    prefix = policy.prefix or "/guardrail"
    lines = [
        f"guardrail demo: a recommendation service behind the guardrail at {base}",
        f"policy {policy.policy_id}, memory store, mode {policy.mode}",
        "",
        "Annotated recommendations for alice (she said yes to personal picks):",
        f"  curl -s -H 'x-user-id: alice' {base}/recommendations",
        "",
        "The same service for other users:",
    ]
    for user, (what, _) in users.items():
        if user == "alice":
            continue
        extra = " -H 'x-user-age: 15'" if user == "carol" else ""
        lines.append(f"  curl -s -H 'x-user-id: {user}'{extra} {base}/recommendations    # {user} {what}")
    lines += [
        f"  curl -s -H 'x-user-id: alice' -H 'Sec-GPC: 1' {base}/recommendations    # the browser's privacy signal",
        f"  curl -s {base}/recommendations    # nobody signed in: non-personalized",
        "",
        "The service honours Guardrail-Context: it skips what would be hidden, so dan's page is full;",
        "ignoring it (context=ignore), the guardrail hides what it should not have picked: a short page.",
        f"  curl -s -H 'x-user-id: dan' '{base}/recommendations?count=40'",
        f"  curl -s -H 'x-user-id: dan' '{base}/recommendations?count=40&context=ignore'",
        "",
        "Change bob's controls, then ask again:",
        "  curl -s -X PATCH -H 'x-user-id: bob' -H 'content-type: application/merge-patch+json' \\",
        f"       -d '{json.dumps(bob_patch)}' {base}{prefix}/v1/controls",
        f"  curl -s -H 'x-user-id: bob' {base}{prefix}/v1/controls",
        f"  curl -s -H 'x-user-id: bob' {base}{prefix}/v1/decisions    # receipts: what was hidden and why",
        "",
        f"Controls: {base}{prefix}/controls   Health: {base}{prefix}/healthz",
    ]
    return "\n".join(lines)
