"""The Redis store, measured against one fresh `redis-server` of our own (never the one on 6379).

    python benchmarks/redis_store.py [--changes 1000] [--users 1000] [--requests 1000] [--rounds 5] [--many 10000]

1. Propagation: replica A (this process) patches a user; replica B (a subprocess, its own
   RedisStore) holds that user warm in its cache. After each change, how long until B's `load`
   returns the new revision. B waits on its cache's invalidation (a StateCache subclass that sets an
   asyncio.Event when the store drops an entry; the store code is unchanged), then calls `load`.
2. Added cost per guarded request, in process (no server, no sockets to the app): the guardrail
   middleware on the Redis store versus on the memory store, with 0%, 5% and 100% of requests
   going to a user whose cache entry was dropped just before. Best of N interleaved rounds.
3. Bytes per user: MEMORY USAGE of one typical user's controls hash and decision list, and
   INFO memory used_memory before and after 10,000 users with controls only.

Pinning: this process (replica A and the middlewares) on core 0; redis-server and replica B on
core 1. The report goes to benchmarks/results/redis_store.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for tests.store.redis_servers (after site-packages: an installed guardrail wins)

import orjson  # noqa: E402
from apps import POLICY_PATH, grant_consent, make_bare, recommendation_body  # noqa: E402
from harness import source_fingerprint, wait_for_quiet_cores  # noqa: E402
from profile_hot_path import SCOPE, receive, replaced  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from redis import asyncio as aioredis  # noqa: E402
from starlette.types import Message, Scope  # noqa: E402

from guardrail import GuardrailMiddleware, load_policy  # noqa: E402
from guardrail.controls import validate_patch  # noqa: E402
from guardrail.errors import StoreError  # noqa: E402
from guardrail.metrics import Metrics  # noqa: E402
from guardrail.store.cache import StateCache  # noqa: E402
from guardrail.store.codec import encode_record  # noqa: E402
from guardrail.store.redis import RedisStore  # noqa: E402
from guardrail.store.redis_keys import controls_key, records_key  # noqa: E402
from tests.store.redis_servers import RedisServer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MAIN_CORE = 0
OTHER_CORE = 1  # redis-server and replica B
PROPAGATION_USER = "prop-user"
TYPICAL_USER = "typical-user"


def _pin(pid: int, core: int) -> None:
    if core < (os.cpu_count() or 1):
        os.sched_setaffinity(pid, {core})


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- part 1: propagation -------------------------------------------------------------------------


class SignallingCache(StateCache):
    """A StateCache that tells its owner when an entry is dropped (instrumentation only)."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = asyncio.Event()

    def invalidate(self, user: str) -> None:
        super().invalidate(user)
        self.dropped.set()


async def replica_b(url: str, user: str, changes: int) -> None:
    """Replica B: keep `user` warm; after each invalidation, load; print `revision seen_at`."""
    cache = SignallingCache()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = RedisStore.from_url(url, cache=cache, metrics=metrics)
    await store.load(user)  # starts the listener
    await asyncio.wait_for(store.subscribed.wait(), 10)
    state = await store.load(user)  # the listener cleared the cache on subscribing: warm it again
    assert state is not None
    revision = state.revision
    hit, _ = cache.get(user)
    out = sys.stdout
    out.write(f"ready {revision} {int(hit)}\n")
    out.flush()
    wakeups = 0
    for _ in range(changes):
        while True:
            state = await store.load(user)
            assert state is not None
            if state.revision > revision:
                seen = time.perf_counter()  # CLOCK_MONOTONIC: one clock for every process
                break
            cache.dropped.clear()
            hit, _ = cache.get(user)
            if hit:  # still warm and old: wait for the invalidation (or poll again after 0.5 s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cache.dropped.wait(), 0.5)
                wakeups += 1
        revision = state.revision
        out.write(f"{revision} {seen!r}\n")
        out.flush()
    lookups = {
        result: registry.get_sample_value("guardrail_cache_lookups_total", {"result": result}) or 0
        for result in ("hit", "miss", "coalesced", "bypass")
    }
    out.write("stats " + json.dumps({"lookups": lookups, "wakeups": wakeups}) + "\n")
    out.flush()
    await store.aclose()


async def propagation(url: str, changes: int) -> dict[str, Any]:
    policy = load_policy(POLICY_PATH)
    store_a = RedisStore.from_url(url)
    now = datetime.now(UTC)
    await store_a.patch(
        PROPAGATION_USER,
        validate_patch(policy, {"consent": {"personalization": "granted"}}, now),
        if_match=None,
        now=now,
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--replica-b",
        url,
        PROPAGATION_USER,
        str(changes),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    _pin(child.pid, OTHER_CORE)
    ready = (await asyncio.wait_for(child.stdout.readline(), 30)).split()
    if not ready or ready[0] != b"ready":
        raise SystemExit(f"replica B did not start: {ready!r}")
    warm_at_start = ready[2] == b"1"
    from_call: list[float] = []  # A starts patch() -> B's load returns the new revision
    from_ack: list[float] = []  # A's patch() returned -> B's load returns it (negative: B was first)
    patch_rtt: list[float] = []
    for index in range(changes):
        value = index % 2 == 0
        body = {"signals": {"location_precise": value}}
        now = datetime.now(UTC)
        patch = validate_patch(policy, body, now)
        started = time.perf_counter()
        state = await store_a.patch(PROPAGATION_USER, patch, if_match=None, now=now)
        acked = time.perf_counter()
        line = (await asyncio.wait_for(child.stdout.readline(), 5)).split()
        revision, seen = int(line[0]), float(line[1])
        if revision != state.revision:
            raise SystemExit(f"replica B saw revision {revision}, A wrote {state.revision}")
        from_call.append((seen - started) * 1e3)
        from_ack.append((seen - acked) * 1e3)
        patch_rtt.append((acked - started) * 1e3)
    stats = json.loads((await asyncio.wait_for(child.stdout.readline(), 10)).split(b" ", 1)[1])
    await child.wait()
    await store_a.aclose()
    return {
        "changes": changes,
        "replica_b": "subprocess, its own RedisStore and connection; pinned with redis-server",
        "warm_at_start": warm_at_start,
        "b_cache_lookups": stats["lookups"],
        "b_wakeups_while_warm": stats["wakeups"],
        "delay_ms": _summary(from_call),
        "delay_after_ack_ms": _summary(from_ack),
        "patch_round_trip_ms": _summary(patch_rtt),
        "over_100ms": sum(1 for d in from_call if d >= 100),
    }


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "min": min(values),
        "mean": statistics.fmean(values),
    }


# -- part 2: cost per request ---------------------------------------------------------------------


def scope_for(user: str) -> Scope:
    return {**SCOPE, "headers": [(b"host", b"127.0.0.1:8000"), (b"x-user-id", user.encode())]}


class Sink:
    def __init__(self) -> None:
        self.start: Message = {}
        self.body = b""
        self.degraded: list[str] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        else:
            self.body = message.get("body", b"")

    def check(self, arm: str) -> None:
        headers = dict(self.start.get("headers", ()))
        summary = orjson.loads(self.body).get("guardrail") if self.body else None
        if self.start.get("status") != 200 or b"guardrail-decision" not in headers or not isinstance(summary, dict):
            raise SystemExit(f"{arm}: not a decision: {self.start} {self.body[:300]!r}")
        if not summary["kept"]:
            raise SystemExit(f"{arm}: empty answer: {summary}")
        if summary["degraded"]:
            self.degraded.append(arm)  # a store call over its budget: counted in the store errors


NO_RECORDS = "redis 0%, store.record() a no-op"
STORE_MISS = "RedisStore: invalidate + load() (a miss), no middleware"
RAW_HGETALL = "HGETALL through the store's redis-py client, no store"
MISS_RATES = {"0%": 0, "5%": 20, "100%": 1}  # every Nth request goes to a dropped entry (0: none)


def _sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


async def cost_per_request(url: str, users: int, requests: int, rounds: int) -> dict[str, Any]:
    policy = load_policy(POLICY_PATH)
    body = recommendation_body(50)
    registries = {"memory": CollectorRegistry(), "redis": CollectorRegistry()}
    apps = {
        "memory": GuardrailMiddleware(make_bare(50), policy=policy, store="memory://", registry=registries["memory"]),
        "redis": GuardrailMiddleware(make_bare(50), policy=policy, store=url, registry=registries["redis"]),
    }
    names = [f"user-{i:05d}" for i in range(users)]
    scopes = [scope_for(name) for name in names]
    for app in apps.values():
        for start in range(0, users, 50):
            await asyncio.gather(*(grant_consent(app, name) for name in names[start : start + 50]))
    redis_store = apps["redis"].store
    assert isinstance(redis_store, RedisStore)
    await redis_store.load(names[0])
    await asyncio.wait_for(redis_store.subscribed.wait(), 10)
    sink = Sink()

    def noop(user: str) -> None:
        return None

    async def serve(app: GuardrailMiddleware, drop: Callable[[str], None], every: int, count: int) -> float:
        started = time.perf_counter()
        for i in range(count):
            index = i % users
            if every and i % every == 0:
                drop(names[index])
            await app(dict(scopes[index]), receive, sink)
            await asyncio.sleep(0)  # a server's event loop runs between requests: let the record flusher in
        return time.perf_counter() - started

    # Warm both (the memo, the cache: every user once), and check the answers are real decisions.
    for name, app in apps.items():
        await serve(app, noop, 0, users)
        sink.check(name)

    client = redis_store.client

    async def raw_hgetall(count: int) -> float:
        started = time.perf_counter()
        for i in range(count):
            await client.hgetall(controls_key(names[i % users]))
        return time.perf_counter() - started

    miss_errors: list[str] = []

    async def store_misses(count: int) -> float:
        started = time.perf_counter()
        for i in range(count):
            name = names[i % users]
            redis_store.cache.invalidate(name)
            try:
                await redis_store.load(name)
            except StoreError:
                miss_errors.append(name)  # over the budget (counted in the store errors)
        return time.perf_counter() - started

    async def without_records() -> float:
        with replaced(redis_store, "record", lambda record: None):
            return await serve(apps["redis"], noop, 0, requests)

    arms: dict[str, Callable[[], Awaitable[float]]] = {}
    for rate, every in MISS_RATES.items():
        for kind, app in apps.items():
            drop = redis_store.cache.invalidate if kind == "redis" else noop
            arms[f"{kind} {rate}"] = functools.partial(serve, app, drop, every, requests)
    arms[NO_RECORDS] = without_records
    arms[STORE_MISS] = functools.partial(store_misses, requests)
    arms[RAW_HGETALL] = functools.partial(raw_hgetall, requests)

    best = dict.fromkeys(arms, float("inf"))
    loads: dict[str, float] = dict.fromkeys(arms, 0.0)
    lookups: dict[str, dict[str, float]] = {name: {} for name in arms}
    served: dict[str, int] = dict.fromkeys(arms, 0)
    redis_registry = registries["redis"]
    for _ in range(rounds):
        for name, arm in arms.items():
            before_loads = _sample(redis_registry, "guardrail_store_seconds_count", {"op": "load"})
            before = {
                r: _sample(redis_registry, "guardrail_cache_lookups_total", {"result": r})
                for r in ("hit", "miss", "coalesced", "bypass")
            }
            seconds = await arm()
            best[name] = min(best[name], seconds / requests * 1e6)
            served[name] += requests
            loads[name] += _sample(redis_registry, "guardrail_store_seconds_count", {"op": "load"}) - before_loads
            for r, value in before.items():
                after = _sample(redis_registry, "guardrail_cache_lookups_total", {"result": r})
                lookups[name][r] = lookups[name].get(r, 0.0) + after - value
            if name not in (STORE_MISS, RAW_HGETALL):
                sink.check(name)
    await redis_store.flush()
    # What a decision record costs the Redis store: encoding, and its share of a pipelined batch.
    captured: list[Any] = []
    with replaced(redis_store, "record", captured.append):
        await serve(apps["redis"], noop, 0, 500)
    started = time.perf_counter()
    for record in captured:
        encode_record(record)
    encode_us = (time.perf_counter() - started) / len(captured) * 1e6
    redis_store._queue.extend(captured)
    started, cpu = time.perf_counter(), time.process_time()
    await redis_store.flush()  # one batch of 500: lpush + ltrim + expire each, one round trip
    flush_us = (time.perf_counter() - started) / len(captured) * 1e6
    flush_cpu_us = (time.process_time() - cpu) / len(captured) * 1e6
    table = []
    for rate in MISS_RATES:
        memory_us, redis_us = best[f"memory {rate}"], best[f"redis {rate}"]
        name = f"redis {rate}"
        table.append(
            {
                "misses": rate,
                "memory_us": memory_us,
                "redis_us": redis_us,
                "difference_us": redis_us - memory_us,
                "redis_round_trips_per_request": loads[name] / served[name],
                "cache_lookups": {k: int(v) for k, v in lookups[name].items() if v},
            }
        )
    errors = {
        op: _sample(redis_registry, "guardrail_store_errors_total", {"op": op})
        for op in ("load", "patch", "record", "decisions")
    }
    records = {
        "written_in_batches": _sample(redis_registry, "guardrail_store_seconds_count", {"op": "record"}),
        "dropped": _sample(redis_registry, "guardrail_decision_records_dropped_total"),
    }
    result = {
        "users": users,
        "requests_per_round": requests,
        "rounds": rounds,
        "body_bytes": len(body),
        "table": table,
        "raw_hgetall_us": best[RAW_HGETALL],
        "store_miss_us": best[STORE_MISS],
        "redis_0pct_without_records_us": best[NO_RECORDS],
        "memory_0pct_us": best["memory 0%"],
        "store_errors": errors,
        "store_miss_arm_errors": len(miss_errors),
        "record_batches": records,
        "record_encode_us": encode_us,
        "record_flush_us": flush_us,
        "record_flush_cpu_us": flush_cpu_us,
        "record_batch_size": len(captured),
    }
    for app in apps.values():
        await app.store.aclose()
    return result


async def burst_of_misses(url: str, sizes: Sequence[int]) -> dict[str, Any]:
    """N concurrent loads of N distinct uncached users on one replica (as after the cache is cleared
    by a reconnect of the invalidation channel): how many fail."""
    result: dict[str, Any] = {}
    store = RedisStore.from_url(url)
    await store.load("burst-warmup")
    await asyncio.wait_for(store.subscribed.wait(), 10)
    for size in sizes:
        for attempt in ("1st", "2nd", "3rd"):  # the pool keeps the connections a burst opened
            names = [f"burst-{size}-{attempt}-{i}" for i in range(size)]
            pool = store.client.connection_pool
            opened = len(pool._available_connections) + len(pool._in_use_connections)
            outcomes = await asyncio.gather(*(store.load(name) for name in names), return_exceptions=True)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            result[f"{size} {attempt}"] = {
                "concurrent": size,
                "attempt": attempt,
                "connections_before": opened,
                "failed": len(failures),
                "errors": sorted({str(f) for f in failures}),
                "pool_max_connections": pool.max_connections,
            }
            store.breaker.success()  # one probe's failures must not open the breaker for the next
            await asyncio.sleep(0.1)
    await store.aclose()
    return result


# -- part 3: bytes per user ----------------------------------------------------------------------


def typical_controls(now: datetime) -> dict[str, Any]:
    until = (now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "consent": {"personalization": "granted"},
        "signals": {"location_precise": False, "purchase_history": False, "third_party": False},
        "muted": {
            "movies.horror": {"until": None},
            "television.reality": {"until": None},
            "sports.baseball": {"until": until},
        },
        "sensitive": {"health": True},
        "locale": "ko",
    }


async def memory_usage(client: Any, key: str) -> int:
    return int(await client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)


async def used_memory(client: Any) -> dict[str, int]:
    await asyncio.sleep(1.5)  # Redis shrinks idle clients' buffers in its cron: let it
    info = await client.info("memory")
    return {name: int(info[name]) for name in ("used_memory", "used_memory_dataset", "mem_clients_normal")}


async def bytes_per_user(url: str, many: int) -> dict[str, Any]:
    policy = load_policy(POLICY_PATH)
    app = GuardrailMiddleware(make_bare(50), policy=policy, store=url, registry=CollectorRegistry())
    store = app.store
    assert isinstance(store, RedisStore)
    client = aioredis.Redis.from_url(url)
    now = datetime.now(UTC)
    patch = validate_patch(policy, typical_controls(now), now)
    await store.patch(TYPICAL_USER, patch, if_match=None, now=now)
    sink = Sink()
    for _ in range(policy.decisions_per_user):
        await app(scope_for(TYPICAL_USER), receive, sink)
    sink.check("typical user")
    kept = len(orjson.loads(sink.body)["items"])
    while store._queue:  # wait until every record is written
        await store.flush()
    ckey, dkey = controls_key(TYPICAL_USER), records_key(TYPICAL_USER)
    fields = await client.hgetall(ckey)
    raw_records = await client.lrange(dkey, 0, -1)
    first = orjson.loads(raw_records[0])
    typical = {
        "controls_key": ckey,
        "controls_fields": len(fields),
        "controls_payload_bytes": sum(len(k) + len(v) for k, v in fields.items()),
        "controls_encoding": (await client.object("encoding", ckey)).decode(),
        "controls_memory_usage": await memory_usage(client, ckey),
        "records_key": dkey,
        "records": len(raw_records),
        "items_per_record": len(first["items"]),
        "items_kept_in_answer": kept,
        "record_payload_bytes_mean": statistics.fmean(len(r) for r in raw_records),
        "records_payload_bytes": sum(len(r) for r in raw_records),
        "records_encoding": (await client.object("encoding", dkey)).decode(),
        "records_memory_usage": await memory_usage(client, dkey),
        "records_ttl_seconds": await client.ttl(dkey),
    }
    # Open the connections the batches below use before measuring: each client costs Redis memory too.
    await asyncio.gather(*(store.patch(f"warmup-{i}", patch, if_match=None, now=now) for i in range(50)))
    before = await used_memory(client)
    keys_before = await client.dbsize()
    started = time.perf_counter()
    names = [f"many-{i:05d}" for i in range(many)]
    for start in range(0, many, 50):  # not 100: the pool holds 100 connections and refuses more
        await asyncio.gather(*(store.patch(name, patch, if_match=None, now=now) for name in names[start : start + 50]))
    seconds = time.perf_counter() - started
    after = await used_memory(client)
    keys_after = await client.dbsize()
    sampled = [await memory_usage(client, controls_key(name)) for name in names[:: max(1, many // 100)]]
    result = {
        "typical_user": typical,
        "many_users": many,
        "keys_added": keys_after - keys_before,
        "used_memory_before": before,
        "used_memory_after": after,
        "used_memory_per_user": (after["used_memory"] - before["used_memory"]) / many,
        "used_memory_dataset_per_user": (after["used_memory_dataset"] - before["used_memory_dataset"]) / many,
        "used_memory_minus_clients_per_user": (
            after["used_memory"] - before["used_memory"] - after["mem_clients_normal"] + before["mem_clients_normal"]
        )
        / many,
        "memory_usage_per_user_sampled_mean": statistics.fmean(sampled),
        "patch_seconds_total": seconds,
    }
    await store.aclose()
    await client.aclose()
    return result


# -- the run ------------------------------------------------------------------------------------


def report(args: argparse.Namespace, command: str, data: dict[str, Any]) -> str:
    p, c, b = data["propagation"], data["cost"], data["bytes"]
    d, da, rtt = p["delay_ms"], p["delay_after_ack_ms"], p["patch_round_trip_ms"]
    t = b["typical_user"]
    lines = [
        "# Redis store: propagation, cost per request, bytes per user",
        "",
        f"`{command}`, {data['date']}, guardrail sources {data['sources']}.",
        "",
        f"Machine: {data['machine']}. {data['redis_version']} on its own port (not 6379), no persistence, "
        f"pinned to core {OTHER_CORE}; this process (replica A, both middlewares) on core {MAIN_CORE}. "
        f"Load average at start: {data['loadavg']}; other processes' share of the busier core at start: "
        f"{data['busy_at_start']:.0%} (the machine is shared: treat small differences as noise).",
        "",
        "## 1. Propagation of a change between two replicas",
        "",
        f"Replica A (this process) patches `signals.location_precise` of one user {p['changes']} times, one "
        "change at a time. Replica B is a **subprocess** with its own `RedisStore` (pinned with redis-server), "
        "holding the user warm in its cache; it waits for its cache's invalidation (a `StateCache` subclass "
        "that sets an event when the store drops an entry), then calls `load()` and notes when the new "
        "revision came back (CLOCK_MONOTONIC, shared by both processes).",
        "",
        "| | p50 ms | p99 ms | max ms | mean ms |",
        "|---|---:|---:|---:|---:|",
        f"| **A starts `patch()` → B's `load()` returns the new revision** | **{d['p50']:.3f}** | "
        f"**{d['p99']:.3f}** | **{d['max']:.3f}** | {d['mean']:.3f} |",
        f"| A's `patch()` returned → B has it (negative: B was first) | {da['p50']:.3f} | {da['p99']:.3f} | "
        f"{da['max']:.3f} | {da['mean']:.3f} |",
        f"| A's `patch()` round trip (Lua script) | {rtt['p50']:.3f} | {rtt['p99']:.3f} | {rtt['max']:.3f} | "
        f"{rtt['mean']:.3f} |",
        "",
        f"Changes: {p['changes']}; over 100 ms (the documented bound): {p['over_100ms']}. B's cache was warm "
        f"before the first change: {p['warm_at_start']}; B's cache lookups: {p['b_cache_lookups']} (one miss "
        "per change, plus the start), so between changes B served the user from its cache.",
        "",
        "## 2. Added cost per guarded request, in process",
        "",
        f"The demo policy, a 50-item body ({c['body_bytes']} bytes) from `benchmarks/apps.py`, the middleware "
        f"called directly with ASGI callables (as `profile_hot_path.py`), {c['users']} consented users in turn; "
        f"best of {c['rounds']} interleaved rounds of {c['requests_per_round']} requests. Misses: every 20th "
        "request (5%) or every request (100%) goes to a user whose entry was dropped with "
        "`store.cache.invalidate(user)` just before. Each request is followed by `await asyncio.sleep(0)` in "
        "both arms, so the decision-record flusher runs as it would in a server (its cost is in the Redis arm). "
        'Round trips per request = `guardrail_store_seconds_count{op="load"}` / requests, from the middleware\'s '
        "own `CollectorRegistry`. A 0% arm can show a few misses: users whose fetch ran over its budget in "
        "the round before (see the store errors) and so were not cached.",
        "",
        "| misses | memory store µs/req | Redis store µs/req | **difference µs** | Redis round trips/req "
        "| cache lookups (all rounds) |",
        "|---|---:|---:|---:|---:|---|",
        *(
            f"| {row['misses']} | {row['memory_us']:.1f} | {row['redis_us']:.1f} | **{row['difference_us']:+.1f}** "
            f"| {row['redis_round_trips_per_request']:.3f} | {row['cache_lookups']} |"
            for row in c["table"]
        ),
        "",
        "Where the difference goes (same rounds, best of):",
        "",
        "| | µs |",
        "|---|---:|",
        f"| Redis 0% misses, with `store.record()` replaced by a no-op (no decision records written) | "
        f"{c['redis_0pct_without_records_us']:.1f} (memory 0%: {c['memory_0pct_us']:.1f}) |",
        f"| one decision record: `encode_record` (orjson of 50 items) | {c['record_encode_us']:.1f} |",
        f"| one decision record: its share of `flush()` of a batch of {c['record_batch_size']} (encode, "
        f"LPUSH + LTRIM + EXPIRE in a pipeline, one round trip), wall / CPU | {c['record_flush_us']:.1f} / "
        f"{c['record_flush_cpu_us']:.1f} |",
        f"| `RedisStore`: `cache.invalidate(user)` + `load(user)`, a miss, no middleware | {c['store_miss_us']:.1f} |",
        f"| `HGETALL` of one user's hash through the store's redis-py client, no store code | "
        f"{c['raw_hgetall_us']:.1f} |",
        "",
        "Store errors (a call over its 20 ms budget, or refused by the open breaker; the middleware then "
        f"answers degraded, failing closed): {c['store_errors']}; of which in the no-middleware miss loop: "
        f"{c['store_miss_arm_errors']}. Decision-record batches written: "
        f"{c['record_batches']['written_in_batches']:.0f}, "
        f"records dropped: {c['record_batches']['dropped']:.0f}.",
        "",
        "### Concurrent misses on one replica",
        "",
        "N concurrent `load()` calls for N distinct uncached users on one `RedisStore` (e.g. a burst after "
        "the invalidation channel reconnects and the cache is cleared); the breaker is reset between sizes.",
        "",
        "| concurrent misses | burst | pool connections before | failed | errors | pool max_connections |",
        "|---:|---|---:|---:|---|---:|",
        *(
            f"| {row['concurrent']} | {row['attempt']} | {row['connections_before']} | {row['failed']} "
            f"| {'; '.join(row['errors']) or '-'} | {row['pool_max_connections']} |"
            for row in data["burst"].values()
        ),
        "",
        "## 3. Bytes per user",
        "",
        "A typical user: consent, 3 signals, 3 mutes (one a 30-day snooze), 1 sensitive opt-in, a locale; "
        f"then {t['records']} guarded requests of {t['items_per_record']} items each, so the decision list is "
        "full. `MEMORY USAGE key SAMPLES 0`.",
        "",
        "| key | fields / entries | payload bytes | encoding | MEMORY USAGE bytes |",
        "|---|---:|---:|---|---:|",
        f"| `{t['controls_key']}` (controls) | {t['controls_fields']} | {t['controls_payload_bytes']} | "
        f"{t['controls_encoding']} | **{t['controls_memory_usage']}** |",
        f"| `{t['records_key']}` (decision records) | {t['records']} | {t['records_payload_bytes']} "
        f"({t['record_payload_bytes_mean']:.0f} per record) | {t['records_encoding']} | "
        f"**{t['records_memory_usage']}** |",
        "",
        f"{b['many_users']} users with the same controls only (`patch()`, 50 at a time, "
        f"{b['patch_seconds_total']:.2f} s): {b['keys_added']} keys added, `used_memory` "
        f"{b['used_memory_before']['used_memory']} → {b['used_memory_after']['used_memory']} bytes = "
        f"**{b['used_memory_per_user']:.0f} bytes per user**; without the change in clients' memory: "
        f"**{b['used_memory_minus_clients_per_user']:.0f}** (used_memory_dataset, which leaves out the "
        f"keyspace's own overhead: "
        f"{b['used_memory_dataset_per_user']:.0f} per user; clients' memory "
        f"{b['used_memory_before']['mem_clients_normal']} → {b['used_memory_after']['mem_clients_normal']}; "
        f"MEMORY USAGE of the hash alone, mean of a sample: {b['memory_usage_per_user_sampled_mean']:.0f}). "
        "The pool's connections were opened before the first reading.",
        "",
        "| per user | bytes |",
        "|---|---:|",
        f"| controls (used_memory growth less clients' memory, / users) | "
        f"{b['used_memory_minus_clients_per_user']:.0f} |",
        f"| controls (MEMORY USAGE of the hash) | {t['controls_memory_usage']} |",
        f"| full decision list ({t['records']} records of {t['items_per_record']} items) "
        f"| {t['records_memory_usage']} |",
        "",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as server:
        assert server.process is not None
        assert server.port != 6379
        _pin(server.process.pid, OTHER_CORE)
        client = aioredis.Redis.from_url(server.url)
        version = (await client.info("server"))["redis_version"]
        await client.aclose()
        print(f"redis-server {version} at {server.url}", flush=True)
        print(f"1. propagation: {args.changes} changes ...", flush=True)
        prop = await propagation(server.url, args.changes)
        print(f"2. cost per request: {args.rounds} rounds of {args.requests} ...", flush=True)
        cost = await cost_per_request(server.url, args.users, args.requests, args.rounds)
        burst = await burst_of_misses(server.url, (20, 50, 100, 200))
        print(f"3. bytes per user: {args.many} users ...", flush=True)
        size = await bytes_per_user(server.url, args.many)
    return {"redis_version": f"Redis {version}", "propagation": prop, "cost": cost, "burst": burst, "bytes": size}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--replica-b"]:
        _, url, user, changes = argv
        asyncio.run(replica_b(url, user, int(changes)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=1000, help="changes for the propagation test")
    parser.add_argument("--users", type=int, default=1000, help="consented users for the cost test")
    parser.add_argument("--requests", type=int, default=1000, help="requests per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; the best counts")
    parser.add_argument("--many", type=int, default=10_000, help="users with controls only, for used_memory")
    parser.add_argument("--quiet-wait", type=float, default=10, help="seconds to wait for quiet cores (default 10)")
    args = parser.parse_args(argv)

    _pin(0, MAIN_CORE)
    busy = wait_for_quiet_cores(args.quiet_wait)  # other processes' share of the busier core
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    started = time.perf_counter()
    data = asyncio.run(run(args))
    data |= {
        "command": shlex.join(["python", "benchmarks/redis_store.py", *argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, Linux {platform.release()}",
        "sources": source_fingerprint(),
        "loadavg": " ".join(loadavg),
        "busy_at_start": busy,
        "seconds": time.perf_counter() - started,
    }
    text = report(args, data["command"], data)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redis_store.md").write_text(text)
    (RESULTS / "redis_store.json").write_text(json.dumps(data, indent=2) + "\n")
    p, c, b = data["propagation"], data["cost"], data["bytes"]
    print(
        f"propagation ({p['changes']} changes): p50 {p['delay_ms']['p50']:.3f} ms, p99 {p['delay_ms']['p99']:.3f} ms, "
        f"max {p['delay_ms']['max']:.3f} ms"
    )
    for row in c["table"]:
        print(
            f"misses {row['misses']:>4}: memory {row['memory_us']:.1f} µs, redis {row['redis_us']:.1f} µs, "
            f"diff {row['difference_us']:+.1f} µs, round trips/req {row['redis_round_trips_per_request']:.3f}"
        )
    t = b["typical_user"]
    print(
        f"bytes: controls {t['controls_memory_usage']} (MEMORY USAGE), {b['used_memory_minus_clients_per_user']:.0f} "
        f"per user (used_memory less clients); decision list {t['records_memory_usage']}"
    )
    print(f"total {data['seconds']:.1f} s; wrote {RESULTS / 'redis_store.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
