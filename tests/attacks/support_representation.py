"""Helpers for the representation and caching attacks: an upstream that negotiates as web frameworks do,
and the two surfaces it is guarded by (the middleware in process, the real sidecar over sockets).

`NegotiatingUpstream` answers `/recommendations` (and `/recommendations/popular`) the way a helpful
framework would: it compresses in the best coding the request accepts (brotli and zstd first), renders
CSV when `Accept` prefers it or `?format=csv` asks, honours `Range` with a 206, answers `If-None-Match`
with a 304, and labels every answer cacheable (`Cache-Control: public`, `ETag`, `Last-Modified`,
`Expires`). It records the headers of every request exactly as it received them.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from guardrail import GuardrailMiddleware
from guardrail.sidecar import build_sidecar
from tests.conftest import make_policy
from tests.sidecar.servers import serving, write_policy
from tests.upstream import DEFAULT_ITEMS, answer_lifespan

SURFACES = ["middleware", "sidecar"]
ETAG = '"v1-all-items"'
LAST_MODIFIED = "Thu, 26 Nov 2026 09:00:00 GMT"
EXPIRES = "Thu, 26 Nov 2026 10:00:00 GMT"
# Stands for a brotli or zstd body: the guardrail cannot decode either, whatever the bytes.
OPAQUE = b"\x8b\x0b\x80not-readable-without-a-decoder"
# What alice (no consent given) may see of DEFAULT_ITEMS: only the non-personalized sports item.
CHECKED_IDS = ["s1"]
# Personalized or sensitive items no consent-less user may see; a body that names one was not checked.
UNCHECKED_MARKERS = (b'"g1"', b'"h1"', b"g1,", b"h1,")


def csv_body(items: list[dict[str, Any]]) -> bytes:
    lines = ["id,categories"] + [f"{item['id']},{'|'.join(item['categories'])}" for item in items]
    return ("\n".join(lines) + "\n").encode()


def leaks(body: bytes) -> bool:
    """Whether the body names an item that a checked answer for alice never holds."""
    return any(marker in body for marker in UNCHECKED_MARKERS)


@dataclass
class NegotiatingUpstream:
    """An ASGI recommendation service that gives the client whatever representation it asks for."""

    items: list[dict[str, Any]] = field(default_factory=lambda: list(DEFAULT_ITEMS))
    seen: list[dict[str, list[str]]] = field(default_factory=list)
    # Set: answer 206 to every request (an upstream that always pages by ranges), Range or not.
    always_partial: bool = False
    # Set: every answer is a 204 with a JSON content type and these extra headers.
    no_content: bool = False
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def json_body(self) -> bytes:
        """The page as JSON, as this upstream writes it (the stdlib: integers of any size, as many upstreams do)."""
        return json.dumps({"items": self.items, "page": 1}).encode()

    def last(self, name: str) -> list[str]:
        """Every value of header `name` in the last request the upstream received."""
        return self.seen[-1].get(name, [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        headers: dict[str, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        self.seen.append(headers)
        status, content_type, body, more = self._answer(scope, headers)
        cache = [
            (b"cache-control", b"public, max-age=600"),
            (b"etag", ETAG.encode()),
            (b"last-modified", LAST_MODIFIED.encode()),
            (b"expires", EXPIRES.encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if status == 304:
            await send({"type": "http.response.start", "status": 304, "headers": cache})
            await send({"type": "http.response.body", "body": b""})
            return
        if status == 204:
            start_headers = [(b"content-type", b"application/json"), *cache, *self.extra_headers]
            await send({"type": "http.response.start", "status": 204, "headers": start_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        coding, body = self._encode(body, headers)
        start_headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *cache, *more]
        if coding:
            start_headers.append((b"content-encoding", coding))
        await send({"type": "http.response.start", "status": status, "headers": start_headers})
        await send({"type": "http.response.body", "body": body})

    def _answer(
        self, scope: Scope, headers: dict[str, list[str]]
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        if self.no_content:
            return 204, b"", b"", []
        if ETAG in ", ".join(headers.get("if-none-match", [])):
            return 304, b"", b"", []
        query = parse_qs(scope["query_string"].decode())
        accept = ", ".join(headers.get("accept", []))
        if query.get("format") == ["csv"] or accept.startswith("text/csv"):
            body, content_type = csv_body(self.items), b"text/csv; charset=utf-8"
        else:
            body, content_type = self.json_body(), b"application/json"
        ranges = headers.get("range", [])
        if self.always_partial or ranges:
            part = body[:40]
            return 206, content_type, part, [(b"content-range", f"bytes 0-{len(part) - 1}/{len(body)}".encode())]
        return 200, content_type, body, []

    @staticmethod
    def _encode(body: bytes, headers: dict[str, list[str]]) -> tuple[bytes, bytes]:
        accepted = {
            token.split(";")[0].strip().lower()
            for value in headers.get("accept-encoding", [])
            for token in value.split(",")
            if "q=0" not in token.replace(" ", "").split(";")[1:]
        }
        for coding in ("br", "zstd", "gzip", "deflate"):
            if coding in accepted:
                if coding == "gzip":
                    return b"gzip", gzip.compress(body)
                if coding == "deflate":
                    return b"deflate", zlib.compress(body)
                return coding.encode(), OPAQUE
        return b"", body


@dataclass
class Surface:
    """One way the guardrail is deployed, in front of `upstream`; `client` talks to it."""

    kind: str
    client: httpx.AsyncClient
    upstream: NegotiatingUpstream
    registry: CollectorRegistry

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def guarded(
    kind: str, upstream: NegotiatingUpstream, tmp_path: Path, **policy_overrides: Any
) -> AsyncIterator[Surface]:
    """The guardrail (`middleware` in process, or the real `sidecar` over sockets) in front of `upstream`,
    with the tests' policy (top-level keys replaced by `policy_overrides`)."""
    registry = CollectorRegistry()
    async with AsyncExitStack() as stack:
        if kind == "middleware":
            app = GuardrailMiddleware(
                upstream, policy=make_policy(**policy_overrides), store="memory://", registry=registry
            )
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        else:
            upstream_url = await stack.enter_async_context(serving(upstream))
            policy = write_policy(tmp_path / "policy.yaml", **policy_overrides)
            sidecar = build_sidecar(policy, upstream_url, store="memory://", registry=registry)
            client = httpx.AsyncClient(base_url=await stack.enter_async_context(serving(sidecar)))
        await stack.enter_async_context(client)
        yield Surface(kind, client, upstream, registry)


async def set_controls(client: httpx.AsyncClient, user: str, patch: dict[str, Any]) -> None:
    response = await client.patch(
        "/guardrail/v1/controls",
        content=orjson.dumps(patch),
        headers={"x-user-id": user, "content-type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text


@dataclass
class Fetched:
    """An answer as it came over the wire: status, headers, and the body before any decoding."""

    status: int
    headers: httpx.Headers
    raw: bytes

    def body(self) -> bytes:
        """The body without its Content-Encoding (gzip and deflate only, as a test can read no other)."""
        coding = self.headers.get("content-encoding", "")
        if coding == "gzip":
            return gzip.decompress(self.raw)
        if coding == "deflate":
            return zlib.decompress(self.raw)
        assert coding == "", f"the client got a {coding} body"
        return self.raw

    def json(self) -> Any:
        return orjson.loads(self.body())

    def ids(self) -> list[str]:
        return [item["id"] for item in self.json()["items"]]


async def fetch(client: httpx.AsyncClient, path: str, headers: dict[str, str], method: str = "GET") -> Fetched:
    """`method path` with exactly these headers (httpx adds none that steer the answer)."""
    request = client.build_request(method, path, headers=headers)
    for name in ("accept", "accept-encoding"):
        if name not in {key.lower() for key in headers}:
            del request.headers[name]
    response = await client.send(request, stream=True)
    try:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    return Fetched(response.status_code, response.headers, raw)
