"""The Prometheus exposition as a pure-ASGI app, to mount at `/metrics` (docs/operations.md#metrics).

It lives with the other HTTP surfaces: `guardrail.metrics`, which the store imports, knows no HTTP.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send


def metrics_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """A pure-ASGI app serving the Prometheus exposition of `registry` (the global one by default)."""
    chosen = registry if registry is not None else REGISTRY

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = generate_latest(chosen)
        headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
