"""Real ASGI upstream apps for the middleware tests: they answer like a recommendation service
would (or as a broken one would), and remember what they were asked."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """The whole lifespan protocol of an app with nothing to start or stop."""
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})


def item(item_id: str, categories: list[str], signals: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": item_id, "categories": categories, **extra}
    if signals is not None:
        body["signals"] = signals
    return body


DEFAULT_ITEMS = [
    item("m1", ["movies"], ["watch_history"]),
    item("m2", ["movies.horror"], ["search_history"]),
    item("s1", ["sports"], []),
    item("g1", ["gambling"], ["watch_history"]),
    item("h1", ["health.pregnancy"], ["watch_history"]),
    item("p1", ["sports"], ["partner_data"]),
]


@dataclass
class Upstream:
    """An ASGI app that returns `body` (bytes, or JSON-encoded) and records each scope it got."""

    body: Any = field(default_factory=lambda: {"items": DEFAULT_ITEMS, "page": 1})
    status: int = 200
    content_type: str = "application/json"
    gzip: bool = False
    chunks: int = 1
    seen: list[Scope] = field(default_factory=list)

    def payload(self) -> bytes:
        raw = self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)
        return gzip.compress(raw) if self.gzip else raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(scope)
        payload = self.payload()
        headers = [(b"content-type", self.content_type.encode()), (b"content-length", str(len(payload)).encode())]
        if self.gzip:
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        size = max(1, -(-len(payload) // self.chunks))
        parts = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for index, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": index < len(parts) - 1})

    def headers_seen(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.seen[-1]["headers"]}


async def call(app: Any, scope: Scope, body: bytes = b"") -> list[Message]:
    """Drive an ASGI app directly and return every message it sent, in order."""
    sent: list[Message] = []
    received = False

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        # Like a client that stays connected: apps listening for a disconnect wait here.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(path: str, *, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
