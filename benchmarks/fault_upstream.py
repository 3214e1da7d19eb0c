"""The recommendation service behind the sidecar in `faults.py`: a uvicorn factory.

    uvicorn --app-dir benchmarks --factory fault_upstream:make_app --port PORT

`/recommendations` answers a page that uses personal signals, `/recommendations/popular` one that does
not (where the guardrail sends people it may not personalize for). `POST /_control?delay=S` makes every
later answer take S seconds more (the "slow upstream" fault). Each answer says in `x-upstream-seconds` how
long the service itself took, so the client can tell the guardrail's time from the upstream's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# (id, categories, signals): personalized picks across plain, muted-able, sensitive and shared-data items.
PERSONAL: list[tuple[str, list[str], list[str]]] = [
    ("p-movies", ["movies", "movies.action"], ["watch_history"]),
    ("p-soccer", ["sports", "sports.soccer"], ["watch_history"]),
    ("p-sports", ["sports"], ["search_history"]),
    ("p-music", ["music", "music.jazz"], ["watch_history"]),
    ("p-books", ["books"], ["purchase_history"]),
    ("p-partner", ["movies"], ["third_party"]),  # shared data: GPC must hide it
    ("p-health", ["health"], ["watch_history"]),  # sensitive: hidden without an opt-in
    ("p-travel", ["travel"], ["location_coarse"]),
]
POPULAR: list[tuple[str, list[str], list[str]]] = [
    ("n-movies", ["movies", "movies.comedy"], []),
    ("n-sports", ["sports", "sports.basketball"], []),
    ("n-news", ["news"], []),
    ("n-food", ["food_drink"], []),
]


def page(entries: list[tuple[str, list[str], list[str]]]) -> bytes:
    items: list[dict[str, Any]] = [
        {"id": item_id, "title": item_id.replace("-", " "), "categories": categories, "signals": signals}
        for item_id, categories, signals in entries
    ]
    return orjson.dumps({"items": items})


def make_app() -> Starlette:
    delay = 0.0
    bodies = {"/recommendations": page(PERSONAL + POPULAR), "/recommendations/popular": page(POPULAR)}

    async def recommendations(request: Request) -> Response:
        started = time.perf_counter()
        if delay:
            await asyncio.sleep(delay)
        return Response(
            bodies[request.url.path],
            media_type="application/json",
            headers={"x-upstream-seconds": f"{time.perf_counter() - started:.6f}"},
        )

    async def control(request: Request) -> Response:
        nonlocal delay
        delay = float(request.query_params.get("delay", "0"))
        return Response(b"", status_code=204)

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[
            Route("/recommendations", recommendations),
            Route("/recommendations/popular", recommendations),
            Route("/_control", control, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )
