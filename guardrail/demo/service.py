"""The demo recommendation service: what a real upstream would return, before the guardrail.

It recommends from a fixed catalog and says, per item, which personal data it relied on
(`signals`), how fresh that activity was and whether the interest was inferred: the item
contract of docs/architecture.md §2. It cooperates as a recommender should: it reads the `Guardrail-Context`
the guardrail sends (docs/integrate.md#honouring-it-in-your-recommender), uses only the signals allowed and skips
the categories excluded, so its pages come back full. Enforcing consent stays the guardrail's job: it still
checks every item.
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

from guardrail.context_header import GuardrailContext, parse_guardrail_context

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


def recommend_for(user: str | None, count: int = 12, context: GuardrailContext | None = None) -> list[dict[str, Any]]:
    """The first `count` picks for `user`. Given the request's `Guardrail-Context`, only the signals it allows are
    used and the categories it excludes are skipped, taking further candidates so that the page stays full."""
    if user is None or (context is not None and not context.personalized):
        return popular(count)
    reasons = _REASONS if context is None else [r for r in _REASONS if set(r[0]) <= set(context.signals)]
    seed = int.from_bytes(hashlib.sha256(user.encode()).digest()[:4], "big")
    # The candidates, best first: every catalog entry once (the step is prime to the catalog's length).
    candidates = (CATALOG[(seed + n * 7) % len(CATALOG)] for n in range(len(CATALOG)))
    picks: list[dict[str, Any]] = []
    for entry in candidates:
        if len(picks) == count:
            break
        if context is not None and any(context.excludes(category) for category in entry["categories"]):
            continue
        signals, age, inferred = reasons[len(picks) % len(reasons)]
        item = {**entry, "score": round(1 - len(picks) / (count * 2), 3), "signals": signals, "inferred": inferred}
        if age is not None:
            item["signal_age_seconds"] = age
        picks.append(item)
    return picks


def popular(count: int = 10) -> list[dict[str, Any]]:
    return [{**entry, "score": 0.5, "signals": []} for entry in CATALOG[::6][:count]]


def page_size(request: Request, default: int) -> int:
    """`?count=N` (1 to the catalog's size), else `default`."""
    asked = request.query_params.get("count", "")
    return min(int(asked), len(CATALOG)) if asked.isdigit() and int(asked) > 0 else default


async def recommendations(request: Request) -> Response:
    user = request.headers.get("x-user-id")
    # `?context=ignore` plays a recommender that ignores the header: the guardrail then hides what it should not
    # have picked, and the page comes back short. It widens nothing: the guardrail checks every item either way.
    honoured = request.query_params.get("context") != "ignore"
    context = parse_guardrail_context(request.headers.get("guardrail-context")) if honoured else None
    body = {"user": user, "items": recommend_for(user, page_size(request, 12), context)}
    return Response(orjson.dumps(body), media_type="application/json")


async def popular_recommendations(request: Request) -> Response:
    return Response(
        orjson.dumps({"user": None, "items": popular(page_size(request, 10))}), media_type="application/json"
    )


def service() -> Starlette:
    return Starlette(
        routes=[
            Route("/recommendations", recommendations),
            Route("/recommendations/popular", popular_recommendations),
        ]
    )
