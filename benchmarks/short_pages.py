"""Items per page with and without `Guardrail-Context` honoured: the short-page figure of docs/performance.md.

    python benchmarks/short_pages.py [--users 50] [--pages 12,40]

The demo recommendation service (guardrail/demo/service.py) behind `GuardrailMiddleware` on the demo policy and
the memory store, in process, asked for each page twice: honouring the context (allowed signals only, excluded
categories skipped, further candidates taken) and ignoring it (`?context=ignore`), so that the guardrail hides
what it should not have picked. For each user state, over the same `--users` users, it prints the items a page
comes back with in each arm (mean and lowest) and how many catalog items the state leaves at all. Deterministic:
the demo ranks from a hash of the user id. A few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.demo.app import demo_policy_path
from guardrail.demo.service import CATALOG, service
from guardrail.policy.loading import load_policy

GRANTED = {"personalization": "granted"}
# Topics muted one after another, mid-sized ones of the demo catalog (4 to 6 items each).
TOPICS = ("sports", "news", "hobbies", "home_garden", "television")
STATES: dict[str, dict[str, Any]] = {
    "said yes, muted nothing": {"consent": GRANTED},
    **{
        f"said yes, {n} muted topic{'s' if n > 1 else ''}": {
            "consent": GRANTED,
            "muted": {topic: {"until": None} for topic in TOPICS[:n]},
        }
        for n in range(1, len(TOPICS) + 1)
    },
    "said yes, exact location off": {"consent": GRANTED, "signals": {"location_precise": False}},
    "said yes, opted into health": {"consent": GRANTED, "sensitive": {"health": True}},
    "said yes to every purpose": {"consent": {"personalization": "granted", "ads_sharing": "granted"}},
    "never asked (the popular list)": {},
}


async def measure(users: int, pages: Sequence[int]) -> list[tuple[str, int, list[int], list[int], int]]:
    """(state, page size, kept per user ignoring the context, kept per user honouring it, catalog items left)."""
    app = GuardrailMiddleware(
        service(), policy=load_policy(demo_policy_path()), store="memory://", registry=CollectorRegistry()
    )
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    rows = []
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        for number, (state, controls) in enumerate(STATES.items()):
            ids = [f"user-{number}-{n:03d}" for n in range(users)]
            for user in ids:
                await set_controls(client, user, controls)
            # What the state leaves of the catalog: the most an honouring recommender can return.
            whole = await get_page(client, ids[0], len(CATALOG), honoured=True)
            left = whole["guardrail"]["kept"] + whole["guardrail"]["hidden"]
            for size in pages:
                kept = {
                    honoured: [len((await get_page(client, user, size, honoured=honoured))["items"]) for user in ids]
                    for honoured in (False, True)
                }
                rows.append((state, size, kept[False], kept[True], left))
    return rows


async def set_controls(client: httpx.AsyncClient, user: str, controls: dict[str, Any]) -> None:
    if not controls:
        return
    response = await client.patch(
        "/guardrail/v1/controls",
        content=orjson.dumps(controls),
        headers={"x-user-id": user, "content-type": "application/merge-patch+json"},
    )
    response.raise_for_status()


async def get_page(client: httpx.AsyncClient, user: str, size: int, *, honoured: bool) -> dict[str, Any]:
    query = {"count": str(size)} if honoured else {"count": str(size), "context": "ignore"}
    response = await client.get("/recommendations", params=query, headers={"x-user-id": user})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def table(rows: list[tuple[str, int, list[int], list[int], int]]) -> str:
    lines = [
        "| user state | page | context ignored: items (lowest) | context honoured: items (lowest) | catalog left |",
        "|---|---:|---:|---:|---:|",
    ]
    for state, size, ignored, honoured, left in rows:
        lines.append(f"| {state} | {size} | {cell(ignored)} | {cell(honoured)} | {left} |")
    return "\n".join(lines)


def cell(kept: list[int]) -> str:
    return f"{sum(kept) / len(kept):.1f} ({min(kept)})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=50, help="users per state")
    parser.add_argument("--pages", default="12,40", help="page sizes asked for (?count=N)")
    args = parser.parse_args(argv)
    pages = [int(size) for size in args.pages.split(",")]
    rows = asyncio.run(measure(args.users, pages))
    command = shlex.join(["python", "benchmarks/short_pages.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"{datetime.now(UTC):%Y-%m-%d}, `{command}`:")
    print(f"demo catalog of {len(CATALOG)} items, {args.users} users per state, popular list of {len(CATALOG[::6])}.\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
