"""The demo recommendation service: what a real upstream would return, before the guardrail.

It recommends from a fixed catalog and says, per item, which personal data it relied on
(`signals`), how fresh that activity was and whether the interest was inferred: the item
contract of docs/architecture.md §2. It knows nothing of consent; that is the guardrail's job.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CATALOG: list[dict[str, Any]] = json.loads(
    resources.files("guardrail.demo").joinpath("catalog.json").read_text(encoding="utf-8")
)["items"]

# Why the service picked an item: (signals, signal_age_seconds, inferred), cycled over the picks.
_REASONS: tuple[tuple[list[str], float | None, bool], ...] = (
    (["watch_history"], 86_400.0, False),
    (["search_history"], 3_600.0, False),
    (["watch_history"], 120.0, False),  # fresh activity: "creepy recency" scores higher
    (["location_coarse"], None, False),
    (["watch_history"], 7_200.0, True),  # an inferred interest
    (["location_precise"], 600.0, False),
    (["purchase_history"], 172_800.0, False),
    (["third_party"], None, True),
    ([], None, False),  # editorial pick, no personal data
)


def recommend_for(user: str | None, count: int = 12) -> list[dict[str, Any]]:
    if user is None:
        return popular(count)
    seed = int.from_bytes(hashlib.sha256(user.encode()).digest()[:4], "big")
    picks = []
    for n in range(count):
        entry = CATALOG[(seed + n * 7) % len(CATALOG)]
        signals, age, inferred = _REASONS[n % len(_REASONS)]
        item = {
            **entry,
            "score": round(1 - n / (count * 2), 3),
            "signals": signals,
            "inferred": inferred,
        }
        if age is not None:
            item["signal_age_seconds"] = age
        picks.append(item)
    return picks


def popular(count: int = 10) -> list[dict[str, Any]]:
    return [{**entry, "score": 0.5, "signals": []} for entry in CATALOG[::6][:count]]


async def recommendations(request: Request) -> Response:
    user = request.headers.get("x-user-id")
    body = {"user": user, "items": recommend_for(user)}
    return Response(orjson.dumps(body), media_type="application/json")


async def popular_recommendations(request: Request) -> Response:
    return Response(orjson.dumps({"user": None, "items": popular()}), media_type="application/json")


def service() -> Starlette:
    return Starlette(
        routes=[
            Route("/recommendations", recommendations),
            Route("/recommendations/popular", popular_recommendations),
        ]
    )
