"""In-process checking (`InProcess.check`) against the middleware and the bare app, in process.

    python benchmarks/inprocess.py [--items 50] [--requests 2000] [--rounds 11]
    python benchmarks/instructions.py inprocess     # the same arms in instructions (valgrind)

A service that holds its recommendations as Python objects: `check` decides the 50 items with no JSON
read or written by the guardrail. The arms, each a request driven through the ASGI app with a scope as
uvicorn makes it (profile_hot_path.py's `serve`), best of interleaved rounds:
- bare: the benchmark's Starlette app answering a prepared body;
- bare, from objects: the same app writing its Python objects with orjson on each request;
- guarded: the bare app behind `GuardrailMiddleware` (reads, checks and writes the JSON);
- in process: the objects app behind the middleware, checking with `check` and answering with a
  `GuardedJSONResponse` (the middleware resolves the caller once and passes the page through).
And, per 50-item list, `check` on its own (resolving the caller from the scope, or given the middleware's
resolution as behind it) against an orjson loads + dumps of the body: the design budget (docs/architecture.md
§10) is at most half that round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

import orjson  # noqa: E402
from apps import POLICY_PATH, grant_consent, make_bare, make_guarded, recommendation_document  # noqa: E402
from harness import SERVER_CORE, source_fingerprint, wait_for_quiet_cores  # noqa: E402
from profile_hot_path import SCOPE, Sink, serve  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.types import ASGIApp  # noqa: E402

from guardrail import GuardedJSONResponse, GuardrailMiddleware, InProcess, load_policy  # noqa: E402
from guardrail.middleware import RESOLVED  # noqa: E402

ROUTE = "/recommendations"


def objects_app(count: int, gr: list[InProcess]) -> Starlette:
    """The service holding its items as objects: with `gr` given, it checks them in process."""
    document = recommendation_document(count)
    items, extra = document["items"], {k: v for k, v in document.items() if k != "items"}

    async def recommendations(request: Request) -> Response:
        if gr:
            return GuardedJSONResponse(await gr[0].check(request, items, route=ROUTE), extra=extra)
        return Response(orjson.dumps(document), media_type="application/json")

    return Starlette(routes=[Route(ROUTE, recommendations)])


def make_inprocess(count: int) -> GuardrailMiddleware:
    gr: list[InProcess] = []
    middleware = GuardrailMiddleware(
        objects_app(count, gr), policy=load_policy(POLICY_PATH), store="memory://", registry=CollectorRegistry()
    )
    gr.append(InProcess(middleware))
    return middleware


async def prepared(count: int) -> tuple[InProcess, list[dict[str, Any]], dict[str, Any]]:
    """`check` ready to run on the benchmark user's page: (handle, items, a scope carrying the
    middleware's resolution, as behind it)."""
    middleware = GuardrailMiddleware(make_bare(count), policy=load_policy(POLICY_PATH), registry=CollectorRegistry())
    await grant_consent(middleware)
    gr = InProcess(middleware)
    items = recommendation_document(count)["items"]
    resolved = await middleware.resolve(dict(SCOPE))
    checked = await gr.check(dict(SCOPE), items, route=ROUTE)
    if checked.summary["degraded"] or not checked.items or not checked.summary["hidden"]:
        raise SystemExit(f"not the page meant to be timed: {checked.summary}")
    return gr, items, {**SCOPE, RESOLVED: resolved}


async def checks(gr: InProcess, items: list[dict[str, Any]], scope: dict[str, Any], requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await gr.check(dict(scope), items, route=ROUTE)
    return time.perf_counter() - started


async def measure(count: int, requests: int, rounds: int) -> dict[str, float]:
    """Best-of-`rounds` µs per request (or per list) of each arm, interleaved round by round."""
    guarded, inprocess = make_guarded(count), make_inprocess(count)
    await grant_consent(guarded)
    await grant_consent(inprocess)
    apps: dict[str, ASGIApp] = {
        "bare": make_bare(count),
        "bare, from objects": objects_app(count, []),
        "guarded": guarded,
        "in process": inprocess,
    }
    gr, items, behind = await prepared(count)
    body = orjson.dumps(recommendation_document(count))
    sink = Sink()
    for app in apps.values():
        await serve(app, sink, 200)
        if app is inprocess and sink.start.get("status") != 200:
            raise SystemExit(f"the in-process arm failed: {sink.start} {sink.body[:300]!r}")
    best = dict.fromkeys([*apps, "check", "check, behind the middleware", "orjson"], float("inf"))
    for _ in range(rounds):
        for name, app in apps.items():
            best[name] = min(best[name], await serve(app, sink, requests) / requests * 1e6)
        best["check"] = min(best["check"], await checks(gr, items, dict(SCOPE), requests) / requests * 1e6)
        behind_us = await checks(gr, items, behind, requests) / requests * 1e6
        best["check, behind the middleware"] = min(best["check, behind the middleware"], behind_us)
        started = time.perf_counter()
        for _ in range(requests):
            orjson.dumps(orjson.loads(body))
        best["orjson"] = min(best["orjson"], (time.perf_counter() - started) / requests * 1e6)
    return best


def run_for_instructions(arm: str, requests: int) -> None:
    """One arm, `requests` times after a warm-up, for instructions.py to count under valgrind."""
    count = 50

    async def main() -> None:
        gr, items, behind = await prepared(count)
        scope = dict(SCOPE) if arm == "check" else behind
        for _ in range(50):  # warm: memo, caches, first-call paths
            await gr.check(dict(scope), items, route=ROUTE)
        await checks(gr, items, scope, requests)

    asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--quiet-wait", type=float, default=120, help="seconds to wait for quiet cores (default 120)")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {int(SERVER_CORE)})
    wait_for_quiet_cores(args.quiet_wait)
    best = asyncio.run(measure(args.items, args.requests, args.rounds))
    command = shlex.join(["python", "benchmarks/inprocess.py", *sys.argv[1:]])
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} `{command}`, guardrail sources {source_fingerprint()}")
    print(f"{args.items} items; µs per request, best of {args.rounds} rounds of {args.requests}:")
    for name, value in best.items():
        print(f"  {name}: {value:.1f}")
    print(f"added by the middleware: {best['guarded'] - best['bare']:.1f} µs")
    print(f"added by checking in process: {best['in process'] - best['bare, from objects']:.1f} µs")
    print(
        f"check / orjson round trip: {best['check'] / best['orjson']:.2f} (resolving), "
        f"{best['check, behind the middleware'] / best['orjson']:.2f} (behind the middleware)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
