"""A recommendation service with guardrail mounted, as a user serves it: `uvicorn guarded_service:app`,
`hypercorn guarded_service:app`, `granian --interface asgi guarded_service:app` (tests/servers/).

It imports guardrail and Starlette only (its directory alone is put on the servers' PYTHONPATH, so that
the installed guardrail is the one served). `GUARDED_SERVICE_POLICY` names the policy file;
`GUARDED_SERVICE_EVENTS` a file where the lifespan writes `startup` and `shutdown`, one a line.

- `/recommendations` (guarded, GET and HEAD): the items gzip-encoded when the request accepts gzip;
- `/feed/plain` (guarded): plain JSON, big enough for the GZipMiddleware outside the guardrail to compress;
- `/stream?token=T` (not guarded): a text/event-stream whose second event waits until `/stream/release?token=T`
  is asked for, so a client sees the first event only if nothing between the app and it buffers;
- `/headers` (not guarded) and the websocket `/ws`: the request headers and the peer the app was given;
- `/lifespan`: what the lifespan started.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from guardrail import GuardrailMiddleware

# How long the stream waits for its release before it gives up and says so in the stream.
RELEASE_WAIT_SECONDS = 10.0
LATE = b'data: "late"\n\n'

ITEMS: list[dict[str, Any]] = [
    {"id": "m1", "categories": ["movies"], "signals": ["watch_history"]},
    {"id": "s1", "categories": ["sports"], "signals": []},
    {"id": "g1", "categories": ["gambling"], "signals": ["watch_history"]},
    {"id": "s2", "categories": ["sports"], "signals": [], "title": "a long title " * 20},
]

started: list[str] = []
releases: dict[str, asyncio.Event] = {}


def _record(event: str) -> None:
    started.append(event)
    path = os.environ.get("GUARDED_SERVICE_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as events:
            events.write(f"{event} {os.getpid()}\n")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    _record("startup")
    yield
    _record("shutdown")


async def recommendations(request: Request) -> Response:
    body = json.dumps({"items": ITEMS, "page": 1}).encode()
    if "gzip" in request.headers.get("accept-encoding", ""):
        compressed = gzip.compress(body, mtime=0)
        return Response(compressed, media_type="application/json", headers={"content-encoding": "gzip"})
    return Response(body, media_type="application/json")


async def feed(request: Request) -> Response:
    return JSONResponse({"data": {"items": ITEMS}})


async def stream(request: Request) -> Response:
    release = releases.setdefault(request.query_params["token"], asyncio.Event())

    async def events() -> AsyncIterator[bytes]:
        yield b'data: "one"\n\n'
        try:
            await asyncio.wait_for(release.wait(), RELEASE_WAIT_SECONDS)
        except TimeoutError:
            yield LATE
        yield b'data: "two"\n\n'

    return StreamingResponse(events(), media_type="text/event-stream")


async def release(request: Request) -> Response:
    releases.setdefault(request.query_params["token"], asyncio.Event()).set()
    return Response(status_code=204)


def _seen(scope: Any) -> dict[str, Any]:
    client = scope.get("client")
    return {
        "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
        "client": client[0] if client else None,
        "http_version": scope.get("http_version"),
    }


async def headers(request: Request) -> Response:
    return JSONResponse(_seen(request.scope))


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(json.dumps(_seen(websocket.scope)))
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


async def lifespan_state(request: Request) -> Response:
    return JSONResponse({"started": started, "pid": os.getpid()})


app = Starlette(
    routes=[
        Route("/recommendations", recommendations, methods=["GET", "HEAD"]),
        Route("/feed/plain", feed),
        Route("/stream", stream),
        Route("/stream/release", release),
        Route("/headers", headers),
        Route("/lifespan", lifespan_state),
        WebSocketRoute("/ws", echo),
    ],
    # The first is outermost: GZip compresses what the guardrail lets out (an app's usual order).
    middleware=[
        Middleware(GZipMiddleware),
        Middleware(GuardrailMiddleware, policy=os.environ.get("GUARDED_SERVICE_POLICY", "guardrail.yaml")),
    ],
    lifespan=lifespan,
)
