"""Helpers for the transport attacks: the sidecar served in this event loop in front of an upstream,
and the answers a scripted upstream gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from guardrail.sidecar import build_sidecar
from tests.sidecar.conftest import Running
from tests.sidecar.servers import serving, write_policy
from tests.upstream import DEFAULT_ITEMS

ALICE = {"x-user-id": "alice"}
# What the upstream recommends: g1 (gambling, sensitive, no opt-in) must never reach alice.
HIDDEN_FOR_ALICE = "g1"
ITEMS_JSON = orjson.dumps({"items": DEFAULT_ITEMS, "page": 1})


def json_answer(body: bytes = ITEMS_JSON, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


@asynccontextmanager
async def sidecar_before(
    upstream_url: str,
    tmp_path: Path,
    *,
    upstream_timeout: float = 30.0,
    max_connections: int | None = None,
    **policy: Any,
) -> AsyncIterator[Running]:
    """The sidecar (memory store, the tests' policy with `policy` keys replaced) in front of `upstream_url`,
    with at most `max_connections` to it if given."""
    registry = CollectorRegistry()
    app = build_sidecar(
        write_policy(tmp_path / "policy.yaml", **policy),
        upstream_url,
        store="memory://",
        upstream_timeout=upstream_timeout,
        registry=registry,
    )
    if max_connections is not None:
        app.proxy.max_connections = max_connections
    async with serving(app) as url:
        yield Running(url, app, registry)
