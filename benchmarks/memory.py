"""Memory at scale: a million distinct users through one replica, on a Redis of our own.

    python benchmarks/memory.py [--users 1000000] [--cache-entries 100000] [--consented 0.1]

One `GuardrailMiddleware` (one replica, in process: no sockets to the app) on the Redis store serves
one guarded request per user, for `--users` distinct users (a tenth of them with consent granted
first), 64 at a time. At checkpoints it reads the process's resident memory (VmRSS), the sizes of
its bounded caches, and the Redis server's `INFO memory`. The claims checked:

- the replica's memory levels off once the user-state cache is full (`?cache_entries=` on the
  store URL bounds it; the context cache and the decision-record queue have fixed bounds);
- Redis holds a user's controls in a few hundred bytes, and decision records no more than
  `decisions_per_user` per user, each list expiring after `decision_retention_days`.

The report goes to benchmarks/results/memory.md. The Redis server is started here on a free port
(never the one on 6379) and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for tests.store.redis_servers (after site-packages: an installed guardrail wins)

from apps import POLICY_PATH, make_bare  # noqa: E402
from harness import source_fingerprint  # noqa: E402
from profile_hot_path import SCOPE, Sink, receive  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from redis import asyncio as aioredis  # noqa: E402

from guardrail import GuardrailMiddleware, load_policy  # noqa: E402
from guardrail.controls import validate_patch  # noqa: E402
from guardrail.errors import StoreError  # noqa: E402
from guardrail.store.redis import RedisStore  # noqa: E402
from guardrail.store.redis_keys import records_key  # noqa: E402
from tests.store.redis_servers import RedisServer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCY = 64


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def scope_for(user: str) -> dict[str, Any]:
    return {**SCOPE, "headers": [(b"host", b"127.0.0.1:8000"), (b"x-user-id", user.encode())]}


async def redis_memory(client: Any) -> tuple[int, int]:
    info = await client.info("memory")
    return int(info["used_memory"]), int(await client.dbsize())


async def run(users: int, cache_entries: int, consented: float, items: int) -> dict[str, Any]:
    # A generous store budget: this measures memory, and a busy machine opening 64 connections at
    # once can take longer than the 20 ms a request waits (the breaker would then skip the store).
    policy = load_policy(POLICY_PATH).model_copy(update={"store_timeout_ms": 500})
    with RedisServer() as server:
        raw = aioredis.Redis.from_url(server.url)
        store_url = f"{server.url}?cache_entries={cache_entries}"
        upstream = make_bare(items)  # serves /recommendations/popular too, where the policy steps aside
        registry = CollectorRegistry()
        middleware = GuardrailMiddleware(upstream, policy=policy, store=store_url, registry=registry)
        store = middleware.runtime.store
        assert isinstance(store, RedisStore)
        grant = validate_patch(policy, {"consent": {"personalization": "granted"}}, datetime.now(UTC))
        sink = Sink()
        every = max(1, round(1 / consented)) if consented > 0 else 0

        async def one(index: int) -> None:
            user = f"user-{index:07d}"
            if every and index % every == 0:
                for _ in range(5):  # a busy machine may keep Redis past the 1 s budget of a change
                    try:
                        await store.patch(user, grant, if_match=None, now=datetime.now(UTC))
                        break
                    except StoreError:
                        await asyncio.sleep(0.1)
            await middleware(scope_for(user), receive, sink)

        await one(0)  # first connection, scripts loaded
        gc.collect()
        base_redis, _ = await redis_memory(raw)
        rows: list[dict[str, Any]] = []
        checkpoints = sorted({c for c in (10_000, 100_000, 250_000, 500_000, 750_000, users) if c <= users})
        started = time.perf_counter()
        served = 1
        for checkpoint in checkpoints:
            while served < checkpoint:
                batch = range(served, min(served + CONCURRENCY, checkpoint))
                await asyncio.gather(*(one(index) for index in batch))
                served = batch.stop
            await store.flush()
            gc.collect()
            used, keys = await redis_memory(raw)
            rows.append(
                {
                    "users": served,
                    "seconds": time.perf_counter() - started,
                    "rss": rss_bytes(),
                    "cache": len(store.cache),
                    "contexts": len(middleware.guard._contexts),
                    "redis_used": used - base_redis,
                    "redis_keys": keys,
                }
            )
            print(f"{served:>9,} users: RSS {rss_bytes() / 2**20:,.1f} MiB, cache {len(store.cache):,}", flush=True)

        # The caps: one user asks for more decisions than decisions_per_user; their list stays capped
        # and expires after the retention.
        heavy = "user-heavy"
        await store.patch(heavy, grant, if_match=None, now=datetime.now(UTC))
        for _ in range(policy.decisions_per_user + 25):
            await middleware(scope_for(heavy), receive, sink)
        await store.flush()
        capped = int(await raw.llen(records_key(heavy)))
        ttl = int(await raw.ttl(records_key(heavy)))
        one_user = await raw.memory_usage(records_key(heavy)) or 0
        controls = await raw.memory_usage(records_key("user-0000000")[: -len(":d")]) or 0
        dropped = registry.get_sample_value("guardrail_decision_records_dropped_total")
        errors = {
            sample.labels["op"]: sample.value
            for metric in registry.collect()
            if metric.name == "guardrail_store_errors"
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        await store.aclose()
        await raw.aclose()
    return {
        "rows": rows,
        "cap": policy.decisions_per_user,
        "capped": capped,
        "ttl": ttl,
        "retention_seconds": policy.decision_retention_days * 86400,
        "full_list_bytes": one_user,
        "controls_bytes": controls,
        "dropped": dropped,
        "errors": errors,
        "consented_every": every,
    }


def report(result: dict[str, Any], argv: Sequence[str], users: int, cache_entries: int, items: int) -> str:
    rows = result["rows"]
    first, last = rows[0], rows[-1]
    lines = [
        "# Memory at scale (issue 8)",
        "",
        f"Run {datetime.now(UTC).isoformat(timespec='seconds')} with "
        f"`python benchmarks/memory.py {shlex.join(argv)}`, on guardrail sources {source_fingerprint()}.",
        "",
        f"{users:,} distinct users, one guarded request each ({items} items), through one replica on a Redis "
        f"of its own; one user in {result['consented_every']} granted consent first. "
        f"Store URL `...?cache_entries={cache_entries}`.",
        "",
        "| users served | seconds | replica RSS, MiB | state cache entries | context cache entries "
        "| Redis used_memory added, MiB | Redis keys | Redis bytes per user |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['users']:,} | {row['seconds']:.0f} | {row['rss'] / 2**20:,.1f} | {row['cache']:,} "
            f"| {row['contexts']:,} | {row['redis_used'] / 2**20:,.1f} | {row['redis_keys']:,} "
            f"| {row['redis_used'] / row['users']:,.0f} |"
        )
    growth = (last["rss"] - first["rss"]) / 2**20
    lines += [
        "",
        f"Replica RSS from {first['users']:,} to {last['users']:,} users: {growth:+,.1f} MiB "
        f"(the state cache is full at {cache_entries:,} entries; past that, users come and go without growing it).",
        "",
        "Redis per user: each user here has a decision list of one record (and the consented ones a controls hash);",
        f"one user's controls hash takes {result['controls_bytes']:,} bytes (`MEMORY USAGE`).",
        "",
        f"Decision records cap: a user served {result['cap'] + 25} times keeps {result['capped']} records "
        f"(`decisions_per_user` is {result['cap']}), {result['full_list_bytes']:,} bytes, expiring in "
        f"{result['ttl']:,} s (`decision_retention_days` is {result['retention_seconds']:,} s). "
        f"Records dropped on the way: {result['dropped']:.0f}; store errors by call: {result['errors'] or 'none'}.",
        "",
        f"Machine: nproc {os.cpu_count()}, python {platform.python_version()}, {platform.machine()}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--cache-entries", type=int, default=100_000, help="the store URL's cache_entries")
    parser.add_argument("--consented", type=float, default=0.1, help="share of users who grant consent first")
    parser.add_argument("--items", type=int, default=10, help="items per response")
    parser.add_argument("--output", type=Path, default=RESULTS / "memory.md")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.users, args.cache_entries, args.consented, args.items))
    text = report(result, sys.argv[1:] if argv is None else list(argv), args.users, args.cache_entries, args.items)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
