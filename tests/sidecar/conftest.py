"""Fixtures for the sidecar tests: a recording upstream, and the sidecar serving in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from guardrail.sidecar import Sidecar, build_sidecar
from tests.sidecar.servers import RecordingUpstream, serving, write_policy


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as server:
        yield server


@pytest.fixture
def upstream(upstream_server: RecordingUpstream) -> RecordingUpstream:
    """The recording upstream, with nothing seen yet (one server per test module: it is stateless)."""
    upstream_server.reset()
    return upstream_server


@dataclass
class Running:
    url: str
    app: Sidecar
    registry: CollectorRegistry

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


StartSidecar = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_sidecar(tmp_path: Path, upstream: RecordingUpstream) -> AsyncIterator[StartSidecar]:
    """`await start_sidecar(upstream_url=..., upstream_timeout=..., tracer_provider=..., **policy_overrides)`:
    the sidecar served on a free port in this event loop, in front of the recording upstream unless told
    otherwise."""
    async with AsyncExitStack() as stack:

        async def start(
            upstream_url: str | None = None,
            *,
            upstream_timeout: float = 30.0,
            tracer_provider: Any = None,
            **overrides: Any,
        ) -> Running:
            policy = write_policy(tmp_path / "policy.yaml", **overrides)
            registry = CollectorRegistry()
            app = build_sidecar(
                policy,
                upstream_url or upstream.url,
                store="memory://",
                upstream_timeout=upstream_timeout,
                registry=registry,
                tracer_provider=tracer_provider,
            )
            url = await stack.enter_async_context(serving(app))
            return Running(url, app, registry)

        yield start
