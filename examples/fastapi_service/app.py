"""A FastAPI recommendation service that checks its items in process (examples/fastapi_service/README.md).

Its recommendations are Python objects from the start: `gr.check` decides them for the caller without
the guardrail reading or writing JSON, and `GuardedJSONResponse` writes the checked page once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

import guardrail
from guardrail import GuardedJSONResponse

POLICY = Path(__file__).resolve().parent / "guardrail.yaml"

# The catalog, ranked for everybody alike: a real service would rank per user.
BOOKS: list[dict[str, Any]] = [
    {"id": "b1", "title": "The Quiet Harbour", "categories": ["fiction"], "signals": ["reading_history"]},
    {"id": "b2", "title": "Murder at the Mill", "categories": ["fiction.mystery"], "signals": ["wishlist"]},
    {"id": "b3", "title": "Small Kitchens", "categories": ["cooking"], "signals": []},
    {"id": "b4", "title": "Stars and Atoms", "categories": ["science"], "signals": ["reading_history"]},
    {"id": "b5", "title": "Calm Minds", "categories": ["health.mental_health"], "signals": ["reading_history"]},
    {"id": "b6", "title": "Roads North", "categories": ["travel"], "signals": ["partner_data"]},
    {"id": "b7", "title": "The Locked Study", "categories": ["fiction.mystery"], "signals": ["reading_history"]},
]

app = FastAPI(title="Bookshop recommendations")
# The guardrail in front of the app (its API under /guardrail, its metrics and records), and the handle
# the routes check their items with. A bad policy stops the service here, naming every problem.
gr = guardrail.install(app, policy=POLICY, store="memory://")


@app.get("/recommendations")
async def recommendations(request: Request) -> GuardedJSONResponse:
    # Ask only for what may be shown (the same facts as the Guardrail-Context header), then check.
    context = await gr.context(request)
    # Copies: `check` sets each kept item's explanation for this caller on the item itself.
    picks = [dict(book) for book in BOOKS if not any(context.excludes(category) for category in book["categories"])]
    checked = await gr.check(request, picks, route="/recommendations")
    return GuardedJSONResponse(checked, extra={"page": 1})


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
