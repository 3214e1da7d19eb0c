"""Shared test helpers: a small policy built in code, and an ASGI client for the middleware."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from guardrail.policy.loading import policy_from_mapping
from guardrail.policy.models import Policy

ROOT = Path(__file__).resolve().parents[1]


def script_env() -> dict[str, str]:
    """The environment for running a benchmark script (`python benchmarks/x.py`): the script's own
    directory on sys.path is how it imports its siblings, which PYTHONSAFEPATH (set by .ci/run) turns off.
    The scripts put the checkout after site-packages, so an installed guardrail still wins."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONSAFEPATH"}


def pytest_configure(config: pytest.Config) -> None:
    # .ci/run tests the built wheel: a `guardrail` imported from the checkout would test the wrong thing.
    if os.environ.get("GUARDRAIL_TEST_INSTALLED"):
        import guardrail

        if Path(guardrail.__file__).resolve().is_relative_to(ROOT):
            raise pytest.UsageError(
                f"GUARDRAIL_TEST_INSTALLED is set but guardrail was imported from the checkout "
                f"({guardrail.__file__}); run with PYTHONSAFEPATH=1 and --import-mode=append"
            )


# Property tests are deterministic by default (the same examples on every run, no example database),
# so that CI fails only when the code changed. HYPOTHESIS_PROFILE=explore searches afresh, with more examples.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def label(en: str, ko: str | None = None) -> dict[str, str]:
    return {"en": en, "ko": ko or f"{en} (ko)"}


BASE_POLICY: dict[str, Any] = {
    "version": 1,
    "policy_id": "test-policy",
    "identity": {"source": "header", "header": "x-user-id", "age_header": "x-user-age"},
    "purposes": {
        "personalization": {"tcf_purposes": [5, 6], "default": "denied"},
        "sharing": {"tcf_purposes": [3, 4], "default": "denied", "follows_gpc": True},
        "measurement": {"default": "granted"},
    },
    "signals": {
        "watch_history": {"purpose": "personalization", "sensitivity": 1, "label": label("what you watched")},
        "search_history": {"purpose": "personalization", "sensitivity": 1, "label": label("what you searched for")},
        "location_precise": {"purpose": "personalization", "sensitivity": 3, "label": label("your exact location")},
        "partner_data": {
            "purpose": "personalization",
            "sensitivity": 2,
            "sale_or_share": True,
            "third_party": True,
            "label": label("data from our partners"),
        },
        "shared_segments": {"purpose": "sharing", "sensitivity": 1, "label": label("groups you are in")},
        "play_count": {"purpose": "measurement", "sensitivity": 0, "label": label("how often you play")},
    },
    "categories": {
        "movies": {"label": label("movies")},
        "movies.horror": {"label": label("horror films")},
        "sports": {"label": label("sports")},
        "gambling": {"sensitive": True, "label": label("gambling")},
        "health": {"sensitive": True, "label": label("health")},
        "health.pregnancy": {"label": label("pregnancy")},
        "health.fitness": {"sensitive": False, "label": label("fitness")},
        "dating": {"sensitive": True, "label": label("dating")},
    },
    "invasiveness": {
        "weights": {
            "sensitive_category": 50,
            "signal_sensitivity": 10,
            "fresh_activity": 20,
            "inferred": 15,
            "third_party": 20,
        },
        "fresh_activity_seconds": 900,
        "discreet_at": 30,
        "hide_at": 70,
    },
    "routes": [
        {
            "path": "/recommendations",
            "methods": ["GET"],
            "items": "/items",
            "default_signals": ["watch_history"],
            "non_personalized": {"rewrite_to": "/recommendations/popular", "strip_headers": ["cookie"]},
        },
        {"path": "/feed/*", "items": "/data/items"},
        {"path": "/list", "items": ""},
    ],
}


def make_policy(**overrides: Any) -> Policy:
    """The test policy, with top-level keys replaced (a value of None removes the key)."""
    data = copy.deepcopy(BASE_POLICY)
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return policy_from_mapping(data, source="test-policy")


@pytest.fixture
def policy() -> Policy:
    return make_policy()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFactory]:
    """`client_for(app, peer="127.0.0.1")`: an httpx client calling the ASGI app from that peer address."""
    clients: list[httpx.AsyncClient] = []

    def factory(app: ASGIApp, peer: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
