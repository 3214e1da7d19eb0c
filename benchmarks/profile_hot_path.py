"""Where the guarded arm's CPU goes, in process: no server, no sockets, no client.

    python benchmarks/profile_hot_path.py [--items 50] [--requests 2000] [--rounds 11] [--top 20]

Calls the same Starlette app as `overhead.py`, bare and behind `GuardrailMiddleware`, directly with
an ASGI scope and receive/send callables, and reports µs per request for each; then what each big
step of a guarded response costs in place, by timing the guarded app again with that one step
replaced by a precomputed answer; then a cProfile of the guarded path. Timings are best-of-rounds,
with every variant (and an orjson loads + dumps of the body) interleaved round by round, on core 0
once cores 0 and 1 are quiet, as in `overhead.py`. The report is also written to
benchmarks/results/profile_hot_path.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from apps import BENCH_USER, grant_consent, make_bare, make_guarded, recommendation_body
from harness import SERVER_CORE, source_fingerprint, wait_for_quiet_cores
from starlette.types import ASGIApp, Message, Scope

import guardrail.responder
from guardrail import GuardrailMiddleware
from guardrail.engine import RequestSignals
from guardrail.engine.loop import check_items
from guardrail.runtime import Runtime

RESULTS = Path(__file__).resolve().parent / "results"

# What uvicorn hands the app for `wrk -H 'x-user-id: bench' http://127.0.0.1:PORT/recommendations`.
SCOPE: Scope = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50312),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "path": "/recommendations",
    "raw_path": b"/recommendations",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"x-user-id", BENCH_USER.encode())],
    "state": {},
}


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Sink:
    """An ASGI `send` that keeps the last response, to check it was the one we meant to time."""

    def __init__(self) -> None:
        self.start: Message = {}
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        else:
            self.body = message.get("body", b"")


async def serve(app: ASGIApp, sink: Sink, requests: int) -> float:
    """Seconds for `requests` sequential requests; each gets its own scope, as from a server."""
    started = time.perf_counter()
    for _ in range(requests):
        await app(dict(SCOPE), receive, sink)
    return time.perf_counter() - started


def check(sink: Sink) -> bytes:
    """The guarded body, once we know it is a real decision and not an error path."""
    headers = dict(sink.start.get("headers", ()))
    summary = orjson.loads(sink.body).get("guardrail") if sink.body else None
    if sink.start.get("status") != 200 or b"guardrail-decision" not in headers or not isinstance(summary, dict):
        raise SystemExit(f"the guarded app did not answer with a decision: {sink.start} {sink.body[:300]!r}")
    if summary["degraded"] or not summary["kept"]:
        raise SystemExit(f"the guarded answer is degraded or empty: {summary}")
    return sink.body


# -- replacing one step with its precomputed answer ----------------------------------------------


@contextmanager
def replaced(target: object, name: str, value: object) -> Iterator[None]:
    """`target.name` is `value` inside the block. Fails loudly if the name is gone: the step moved."""
    own = name in vars(target)
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        if own:
            setattr(target, name, original)
        else:
            delattr(target, name)  # an instance attribute shadowing a method


class _NullMetric:
    def inc(self, amount: float = 1) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None


Variant = Callable[[], AbstractContextManager[Any]]


async def variants(middleware: GuardrailMiddleware, body: bytes, guarded_body: bytes) -> dict[str, Variant]:
    """The guarded app with one step replaced by its precomputed answer, by the step's name."""
    guard, runtime = middleware.guard, middleware.runtime
    route = guard.routes.match("/recommendations", "GET")
    assert route is not None
    state = await runtime.store.load(BENCH_USER)
    ctx, _ = guard.context(BENCH_USER, state, RequestSignals(False, False, None), None)
    document = orjson.loads(body)
    items = document["items"]
    checked = check_items(ctx, route.fields, items, route.default_signals, annotate=True)
    notice = orjson.loads(guarded_body)["guardrail"]["notice"]
    # A fresh top-level document over the same item dicts: the responder replaces the list and adds
    # the summary, and (re)setting an item's explanation is idempotent.
    no_loads = SimpleNamespace(**{**vars(orjson), "loads": lambda raw: {**document, "items": list(items)}})
    no_dumps = SimpleNamespace(**{**vars(orjson), "dumps": lambda value: guarded_body})
    return {
        "orjson.loads of the upstream body (and freeing it)": lambda: replaced(guardrail.responder, "orjson", no_loads),
        "check_items (50 items, warm memo)": lambda: replaced(
            guardrail.responder, "check_items", lambda *args, **kwargs: checked
        ),
        "notice (the summary sentence)": lambda: replaced(guardrail.responder, "notice", lambda *args: notice),
        "orjson.dumps of the guarded body": lambda: replaced(guardrail.responder, "orjson", no_dumps),
        "after_decision (item counters, decision record, store)": lambda: replaced(
            runtime, "after_decision", lambda *args, **kwargs: None
        ),
        "overhead histogram + request counter": lambda: _without_request_metrics(runtime),
    }


@contextmanager
def _without_request_metrics(runtime: Runtime) -> Iterator[None]:
    count = runtime._count  # after_decision's counters go through it too: replaced only for "requests"

    def requests_free(route: str, metric: str, label: str) -> Any:
        return _NullMetric() if metric == "requests" else count(route, metric, label)

    with ExitStack() as stack:
        stack.enter_context(replaced(runtime, "_overhead", _NullMetric()))
        stack.enter_context(replaced(runtime, "_count", requests_free))
        yield


async def per_request(
    runs: dict[str, tuple[ASGIApp, Variant]], body: bytes, requests: int, rounds: int
) -> tuple[dict[str, float], int]:
    """Best-of-`rounds` µs per request of each run and of an orjson loads + dumps of the body, all
    interleaved round by round so that a noisy neighbour slows them alike; and how many garbage
    collections ran meanwhile."""
    best = dict.fromkeys([*runs, "orjson"], float("inf"))
    sink = Sink()
    loads, dumps = orjson.loads, orjson.dumps
    collections = sum(generation["collections"] for generation in gc.get_stats())
    for _ in range(rounds):
        for name, (app, variant) in runs.items():
            with variant():
                best[name] = min(best[name], await serve(app, sink, requests) / requests * 1e6)
        started = time.perf_counter()
        for _ in range(requests):
            dumps(loads(body))
        best["orjson"] = min(best["orjson"], (time.perf_counter() - started) / requests * 1e6)
    collections = sum(generation["collections"] for generation in gc.get_stats()) - collections
    return best, collections


def profile(middleware: ASGIApp, requests: int, top: int) -> str:
    sink = Sink()
    profiler = cProfile.Profile()

    async def run() -> None:
        profiler.enable()
        await serve(middleware, sink, requests)
        profiler.disable()

    asyncio.run(run())
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue().strip()


async def measure(
    bare: ASGIApp, guarded: GuardrailMiddleware, body: bytes, requests: int, rounds: int
) -> tuple[dict[str, float], dict[str, float], int]:
    """(µs per request of each run, the in-place cost of each step, garbage collections)."""
    sink = Sink()
    await serve(bare, Sink(), 200)
    await serve(guarded, sink, 200)  # warm the caches and the memo
    steps = await variants(guarded, body, check(sink))
    runs: dict[str, tuple[ASGIApp, Variant]] = {"bare": (bare, nullcontext), "guarded": (guarded, nullcontext)}
    runs |= {name: (guarded, variant) for name, variant in steps.items()}
    best, collections = await per_request(runs, body, requests, rounds)
    await serve(guarded, sink, 1)
    check(sink)
    costs = {name: best["guarded"] - best[name] for name in steps}
    return best, costs, collections


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000, help="requests per timed round (default 2000)")
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds; the best counts (default 11)")
    parser.add_argument("--top", type=int, default=20, help="functions in the profile (default 20)")
    parser.add_argument("--quiet-wait", type=float, default=120, help="seconds to wait for quiet cores (default 120)")
    args = parser.parse_args(argv)

    os.sched_setaffinity(0, {int(SERVER_CORE)})
    sources = source_fingerprint()  # of the code this process imported
    wait_for_quiet_cores(args.quiet_wait)
    body = recommendation_body(args.items)
    bare, guarded = make_bare(args.items), make_guarded(args.items)
    asyncio.run(grant_consent(guarded))
    best, costs, collections = asyncio.run(measure(bare, guarded, body, args.requests, args.rounds))
    report = profile(guarded, args.requests, args.top)

    added, orjson_us = best["guarded"] - best["bare"], best["orjson"]
    rest = added - sum(costs.values())
    lines = [
        "# Guarded hot path, in process",
        "",
        f"`{shlex.join(['python', 'benchmarks/profile_hot_path.py', *sys.argv[1:]])}`, "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, guardrail sources {sources}.",
        "",
        f"{args.items} items, {len(body)} bytes; best of {args.rounds} rounds of {args.requests} requests.",
        "",
        "| | µs/request |",
        "|---|---:|",
        f"| bare Starlette app | {best['bare']:.1f} |",
        f"| guarded | {best['guarded']:.1f} |",
        f"| **added** | **{added:.1f}** |",
        f"| orjson loads + dumps of the body | {orjson_us:.1f} |",
        f"| added / orjson (budget ≤ 3) | {added / orjson_us:.2f} |",
        "",
        f"Garbage collections during the timed requests: {collections} (a request's objects die with it, "
        "so the collector's allocation count does not grow).",
        "",
        "## What each step costs in place",
        "",
        "The guarded app timed again with one step replaced by its precomputed answer; the difference "
        "is that step's cost inside a real request (cache effects and freeing included).",
        "",
        "| step | µs/request | share of added |",
        "|---|---:|---:|",
        *(f"| {name} | {us:.1f} | {us / added:.0%} |" for name, us in costs.items()),
        f"| everything else: header scan, identity, store load, context, responder, splitting kept from "
        f"hidden, summary, start message, ASGI hops | {rest:.1f} | {rest / added:.0%} |",
        "",
        f"## cProfile of {args.requests} guarded requests",
        "",
        "cProfile inflates small functions; the table above is the one to trust.",
        "",
        "```",
        report,
        "```",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_hot_path.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
