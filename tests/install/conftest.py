"""Fixtures for `guardrail.install`: a Redis server of this package's own (its connections are counted),
a policy file, a broken one, and a lifespan driven as a server drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.sidecar.servers import write_policy
from tests.store.redis_servers import RedisServer

BROKEN_POLICY = "version: 1\npolicy_id: [not, an, id]\n"  # four problems: a bad id, three keys missing


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "policy.yaml")


@pytest.fixture
def broken_policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_POLICY, encoding="utf-8")
    return path


def store_connections(server: RedisServer) -> int:
    """How many connections the server has, besides the one asking."""
    client: redis.Redis = server.client()
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


class Lifespan:
    """An app's lifespan as a server runs it: startup, then (after the `async with`) shutdown."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[str] = []

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message["type"])
        await self.from_app.put(message)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        task = asyncio.create_task(self.app(scope, self.to_app.get, self._send))
        await self.to_app.put({"type": "lifespan.startup"})
        started = await self.from_app.get()
        assert started["type"] == "lifespan.startup.complete", started
        try:
            yield
        finally:
            await self.to_app.put({"type": "lifespan.shutdown"})
            stopped = await self.from_app.get()
            assert stopped["type"] == "lifespan.shutdown.complete", stopped
            await task
