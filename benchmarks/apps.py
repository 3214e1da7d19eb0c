"""The arms of the benchmarks, as uvicorn app factories.

    uvicorn --app-dir benchmarks --factory apps:make_bare
    uvicorn --app-dir benchmarks --factory apps:make_guarded

Every arm serves the same pre-serialized recommendation body, so the bare arm costs as little as
Starlette allows and the difference between an arm and the bare one is what the arm adds.
Factories take no arguments under uvicorn; the environment says what to build:
`BENCH_ITEMS` (items per response, 50 by default), `BENCH_USERS` (how many users have consented:
`bench`, `bench-1`, ... ; 1 by default), `BENCH_STORE` (the guardrail's store URL, `memory://` by
default), `BENCH_MISS_EVERY` (drop the caller's cached state before every Nth request; 0: never)
and `BENCH_REDIS_URL` (the naive arm's Redis).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardrail import GuardrailMiddleware, load_policy
from guardrail.controls import validate_patch
from guardrail.errors import StoreError
from guardrail.state import UserState
from guardrail.store import Store

if TYPE_CHECKING:
    from peers.rego import RegoGuard

POLICY_PATH = Path(__file__).resolve().parent.parent / "config" / "guardrail.yaml"
BENCH_USER = "bench"
ITEMS_ENV = "BENCH_ITEMS"
USERS_ENV = "BENCH_USERS"
STORE_ENV = "BENCH_STORE"
MISS_ENV = "BENCH_MISS_EVERY"
REDIS_ENV = "BENCH_REDIS_URL"
# CPU the upstream spends per recommendation request, in µs (default 0: it returns a prepared body).
# A real recommender computes its answer; with it, "half the bare app's maximum" is a rate a
# guardrail can be asked to keep (suite.py --upstream-work-us).
WORK_ENV = "BENCH_UPSTREAM_WORK_US"

# The shapes a ranker for a media service returns, with how often: mostly mainstream topics from
# the watch history, some from searches, some popular picks (no signals), a few on a sensitive topic
# (hidden by the demo policy without an opt-in, or shown discreetly when popular) and a few on recent
# activity (scored as more invasive). (categories, signals, seconds since the activity, weight)
_SHAPES: tuple[tuple[tuple[str, ...], tuple[str, ...], int | None, int], ...] = (
    (("movies", "movies.action"), ("watch_history",), None, 10),
    (("movies", "movies.comedy"), ("watch_history",), None, 8),
    (("movies.documentary",), ("watch_history",), None, 5),
    (("music", "music.jazz"), ("watch_history",), None, 6),
    (("music.classical",), ("search_history",), None, 4),
    (("sports", "sports.soccer"), ("watch_history",), None, 7),
    (("sports.basketball",), ("search_history",), None, 4),
    (("television", "television.reality"), ("watch_history", "search_history"), None, 4),
    (("books",), ("search_history",), None, 3),
    (("movies", "movies.action"), (), None, 5),
    (("music", "music.jazz"), (), None, 3),
    (("movies", "movies.comedy"), ("watch_history",), 300, 3),
    (("health",), ("watch_history",), None, 2),
    (("gambling", "sports.soccer"), ("search_history",), None, 1),
    (("health",), (), None, 1),
)
_WORDS = (
    "midnight", "river", "golden", "echoes", "city", "last", "summer", "blue", "north", "final",
    "quiet", "storm", "highway", "season", "story", "light", "wild", "kings", "garden", "signal",
)  # fmt: skip


def recommendation_document(count: int = 50, *, seed: int = 0) -> dict[str, Any]:
    """A ranker's response of `count` items, drawn (seeded) from the weighted `_SHAPES`.

    A 50-item page has about fifteen distinct (categories, signals, fresh) shapes, which is what
    the engine's per-shape memo sees in practice.
    """
    rng = random.Random(seed)
    shapes = rng.choices(_SHAPES, weights=[shape[3] for shape in _SHAPES], k=count)
    items: list[dict[str, Any]] = []
    for index, (categories, signals, age, _) in enumerate(shapes):
        item: dict[str, Any] = {
            "id": f"rec-{index:04d}-{rng.randrange(16**6):06x}",
            "title": " ".join(rng.choice(_WORDS).capitalize() for _ in range(rng.randint(2, 4))),
            "score": round(1.0 - index / (count + 1) - rng.random() / 100, 4),
            "categories": list(categories),
            "signals": list(signals),
        }
        if age is not None:
            item["signal_age_seconds"] = age + rng.randrange(300)
        items.append(item)
    return {"items": items, "model": "two-tower-v3", "generated_at": "2026-11-26T09:00:00Z"}


def recommendation_body(count: int = 50) -> bytes:
    return orjson.dumps(recommendation_document(count))


def distinct_shapes(document: dict[str, Any]) -> int:
    """How many entries the engine's memo needs for this page (its key, without `inferred`)."""
    return len({(tuple(i["categories"]), tuple(i["signals"]), "signal_age_seconds" in i) for i in document["items"]})


def _body(count: int | None) -> bytes:
    """The body of `count` items; by default as many as `BENCH_ITEMS` says (uvicorn factories take no arguments)."""
    return recommendation_body(int(os.environ.get(ITEMS_ENV, "50")) if count is None else count)


def bench_users(count: int | None = None) -> list[str]:
    """`bench`, `bench-1`, ...: as many as `count`, by default as `BENCH_USERS` says (1)."""
    count = int(os.environ.get(USERS_ENV, "1")) if count is None else count
    return [BENCH_USER, *(f"{BENCH_USER}-{i}" for i in range(1, count))]


def _routes(body: bytes, registry: CollectorRegistry | None = None) -> list[Route]:
    work = float(os.environ.get(WORK_ENV, "0")) / 1e6

    async def recommendations(request: Request) -> Response:
        if work:
            # Busy, not asleep: a recommender's scoring takes the CPU, and the event loop waits for it.
            deadline = time.perf_counter() + work
            while time.perf_counter() < deadline:
                pass
        return Response(body, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/recommendations", recommendations),
        # Where the demo policy sends users without personal picks (`non_personalized`), e.g. when the
        # guardrail's store is over its time budget (fail closed): answered alike, so that a load run
        # counts such responses as degraded rather than failing on a 404.
        Route("/recommendations/popular", recommendations),
        Route("/healthz", healthz),
    ]
    if registry is not None:

        async def metrics(request: Request) -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        # The guardrail's own view of its overhead (guardrail_overhead_seconds), for overhead.py.
        routes.append(Route("/metrics", metrics))
    return routes


def make_bare(count: int | None = None) -> Starlette:
    return Starlette(routes=_routes(_body(count)))


# What every benchmark user has set: personal picks allowed, nothing else changed.
BENCH_CONTROLS: dict[str, Any] = {"consent": {"personalization": "granted"}}


async def grant_consent(
    middleware: GuardrailMiddleware, user: str = BENCH_USER, controls: dict[str, Any] | None = None
) -> None:
    now = datetime.now(UTC)
    patch = validate_patch(middleware.policy, BENCH_CONTROLS if controls is None else controls, now)
    await middleware.runtime.store.patch(user, patch, if_match=None, now=now)


def make_guarded(
    count: int | None = None, *, store: str | None = None, users: list[str] | None = None, tracer_provider: Any = None
) -> GuardrailMiddleware:
    """The bare app behind the guardrail. Served with a lifespan (uvicorn's default), the users have
    granted consent before the first request; in-process callers await `grant_consent` themselves.
    `tracer_provider`: traced with it (benchmarks/instructions.py tracing)."""
    middleware: GuardrailMiddleware | None = None
    granted = bench_users() if users is None else users

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert middleware is not None
        # Only users without a state yet: on a shared Redis, a patch would also drop every other
        # server's cached copy of the user (the invalidation channel), and a warm arm would turn cold.
        # Then "warm": every user's state is in the store's local cache already.
        for user in granted:
            if await warm(middleware.runtime.store, user) is None:
                await grant_consent(middleware, user)
                await warm(middleware.runtime.store, user)
        yield

    async def warm_all(request: Request) -> Response:
        # For suite.py, just before each measured run: a Redis store's local cache keeps an entry for
        # 60 s, and between runs of this arm minutes pass; loaded one at a time, no load goes over budget.
        assert middleware is not None
        for user in granted:
            await warm(middleware.runtime.store, user)
        return PlainTextResponse(f"{len(granted)} users warm")

    registry = CollectorRegistry()
    routes = [*_routes(_body(count), registry), Route("/bench/warm", warm_all, methods=["POST"])]
    inner = Starlette(routes=routes, lifespan=lifespan)
    store = os.environ.get(STORE_ENV, "memory://") if store is None else store
    middleware = GuardrailMiddleware(
        inner, policy=load_policy(POLICY_PATH), store=store, registry=registry, tracer_provider=tracer_provider
    )
    return middleware


def make_guarded_redis(
    count: int | None = None, *, store: str | None = None, users: list[str] | None = None, miss_every: int | None = None
) -> ASGIApp:
    """The guardrail on a Redis store (`BENCH_STORE`). With `miss_every` N > 0, every Nth request first
    drops its caller from the store's local cache (as `redis_store.py` does in process), so that it
    pays a miss: a round trip, and a user context built afresh."""
    middleware = make_guarded(count, store=store, users=users)
    every = int(os.environ.get(MISS_ENV, "0")) if miss_every is None else miss_every
    return ForcedMisses(middleware, every) if every > 0 else middleware


async def warm(store: Store, user: str) -> UserState | None:
    """Load `user` until the store answers within its time budget (a busy machine can miss it, the
    first connection too), so that the next request finds the user's state cached."""
    for _ in range(50):
        try:
            return await store.load(user)
        except StoreError:
            await asyncio.sleep(0.1)
    raise StoreError(f"the store did not answer within its budget for {user!r} in 50 tries")


class ForcedMisses:
    """Drop the caller's cached state before every Nth request (the store must have a local cache)."""

    def __init__(self, middleware: GuardrailMiddleware, every: int) -> None:
        self.app = middleware
        self.cache = getattr(middleware.runtime.store, "cache")  # noqa: B009 (RedisStore only, not in the Store protocol)
        self.every = every
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests += 1
            if self.requests % self.every == 0:
                for name, value in scope["headers"]:
                    if name == b"x-user-id":
                        self.cache.invalidate(value.decode())
        await self.app(scope, receive, send)


class Passthrough:
    """A pure-ASGI middleware that sits in the response path and changes nothing: what being a
    middleware at all costs (one more coroutine per request, one more call per message)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def forward(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, forward)


def make_passthrough(count: int | None = None) -> Passthrough:
    return Passthrough(Starlette(routes=_routes(_body(count))))


class OrjsonRoundTrip:
    """The yardstick arm: a pure-ASGI middleware that buffers the body, parses it with orjson and
    serializes it again, and nothing else. 1/rps of this arm minus 1/rps of the bare arm is
    "the cost of an orjson loads+dumps of the same body" measured the way the guardrail is measured:
    inside the server, with the same cache effects."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def buffered(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                if (b"content-type", b"application/json") not in message["headers"]:
                    await send(message)  # /healthz and the like go through as they are
                return
            if (b"content-type", b"application/json") not in start["headers"]:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = self.rewrite(b"".join(chunks), scope)
            headers = [h for h in start["headers"] if h[0] != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered)

    def rewrite(self, body: bytes, scope: Any) -> bytes:
        return orjson.dumps(orjson.loads(body))


def make_orjson(count: int | None = None) -> OrjsonRoundTrip:
    return OrjsonRoundTrip(Starlette(routes=_routes(_body(count))))


def make_naive(
    count: int | None = None, *, redis_url: str | None = None, controls: dict[str, dict[str, Any]] | None = None
) -> Starlette:
    """The same checks written the naive way (`peers/naive.py`), the users' controls in Redis
    (written on start-up: by default the benchmark users with `BENCH_CONTROLS`)."""
    from peers.naive import naive_app  # imported here: the other arms' servers need none of it

    url = os.environ[REDIS_ENV] if redis_url is None else redis_url
    controls = dict.fromkeys(bench_users(), BENCH_CONTROLS) if controls is None else controls
    return naive_app(_routes(_body(count)), load_policy(POLICY_PATH), url, controls)


def make_rego(count: int | None = None, *, controls: dict[str, dict[str, Any]] | None = None) -> RegoGuard:
    """The same policy in Rego (`peers/guardrail.rego`), evaluated once per request by regopy; the
    users' controls in process (by default the benchmark users with `BENCH_CONTROLS`)."""
    from peers.rego import RegoGuard  # regopy loads a large shared library: only in this arm's server

    controls = dict.fromkeys(bench_users(), BENCH_CONTROLS) if controls is None else controls
    return RegoGuard(Starlette(routes=_routes(_body(count))), load_policy(POLICY_PATH), controls)
