"""The guardrail against a bare app, a naive middleware and a policy engine, in one run (issue 7).

    python benchmarks/suite.py            # the full run: about 8 minutes on a quiet machine
    python benchmarks/suite.py --upstream-work-us 500   # an upstream that spends 500 µs computing its answer
    python benchmarks/suite.py --quick    # a smoke run of every step: about 2 minutes
    python benchmarks/suite.py --dry-run  # build every arm in process and check its answer: no load

Every arm (see ARMS) runs as its own uvicorn process pinned to core 0; the load generators run on
core 1: Debian's wrk in a closed loop for the maximum throughput, then wrk2 (vendored in
benchmarks/wrk2/, built on first use) in an open loop at a fixed rate, half the bare app's maximum,
for latency percentiles that include queueing (measured from when each request was due). Requests
go to `--users` users in turn. A redis-server of the run's own (a free port, never 6379) serves
the Redis arms and the naive arm, pinned to core 1.

Per arm: max req/s; CPU added per request versus the bare app, from 1/rps and from the server's own
CPU time in /proc; that cost as a multiple of the orjson round trip arm's; p50 and p99 at the fixed
rate. Arms alternate order between repeats, and every run says when other processes took CPU.
Then the scaling run: the guardrail and the orjson yardstick at 10 to 1,000 items per response.

Results: benchmarks/results/suite.md, suite.json, suite.png, scaling.png (`--quick`: suite-quick.*).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for tests.store.redis_servers (after site-packages: an installed guardrail wins)

import orjson  # noqa: E402
from apps import (  # noqa: E402
    BENCH_USER,
    MISS_ENV,
    REDIS_ENV,
    STORE_ENV,
    USERS_ENV,
    WORK_ENV,
    distinct_shapes,
    recommendation_document,
)
from harness import (  # noqa: E402
    CLIENT_CORE,
    NOISE_LIMIT,
    RESULTS,
    SERVER_CORE,
    BenchError,
    children_cpu_seconds,
    core_seconds,
    cpu_seconds,
    machine_info,
    orjson_roundtrip_us,
    server,
    server_options,
    source_fingerprint,
    wait_for_quiet_cores,
)
from loadgen import closed_loop, ensure_tools, open_loop, wrk2_binary  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.store.redis_servers import RedisServer  # noqa: E402


@dataclass(frozen=True, slots=True)
class Arm:
    name: str
    label: str
    factory: str  # a function of apps.py
    env: dict[str, str] = field(default_factory=dict)  # "{redis}" stands for the run's Redis URL
    guardrail: bool = False  # serves the guardrail's /metrics
    decides: bool = False  # hides and explains items (its kept ids must match the guardrail's)


ARMS = (
    Arm("bare", "bare app", "make_bare"),
    Arm("passthrough", "pure-ASGI passthrough", "make_passthrough"),
    Arm("orjson", "buffer + orjson round trip", "make_orjson"),
    Arm("guardrail", "guardrail, memory store (warm)", "make_guarded", guardrail=True, decides=True),
    *(
        Arm(
            f"redis-{rate}",
            f"guardrail, Redis, {rate}% misses",
            "make_guarded_redis",
            {STORE_ENV: "{redis}", MISS_ENV: str(every)},
            guardrail=True,
            decides=True,
        )
        for rate, every in ((0, 0), (5, 20), (100, 1))
    ),
    Arm("naive", "naive: BaseHTTPMiddleware, json, Redis GET", "make_naive", {REDIS_ENV: "{redis}"}, decides=True),
    Arm("rego", "Rego policy (regopy), once per request", "make_rego", decides=True),
)
BY_NAME = {arm.name: arm for arm in ARMS}
SCALING_ARMS = ("bare", "orjson", "guardrail")
OVER_CAPACITY = 1.1  # an arm whose max req/s is below this times the fixed rate is not run open-loop
# Closed-loop connections: enough to keep the server busy, with about this much work queued. More
# only lengthens the event loop's queue: a request then waits longer for its turn, and a Redis
# answer waits for the loop too, past the guardrail's 20 ms store budget (the response degrades).
TARGET_QUEUE_SECONDS = 0.005


@dataclass(slots=True)
class Sample:
    """One load run against one arm."""

    size: int
    arm: str
    kind: str  # "closed" (wrk, max throughput) or "open" (wrk2, fixed rate)
    repeat: int
    connections: int
    rate: float | None
    rps: float
    requests: int
    latency_ms: dict[str, float]
    socket_errors: int
    server_cpu_us: float  # the server process's user+system CPU per request, from /proc
    server_cpu_share: float  # of its core, over the run
    redis_cpu_us: float  # redis-server's CPU per request (0 for arms that do not use it)
    others_server_core: float  # share of the cores' time that went to other processes
    others_client_core: float
    store_loads_per_request: float | None = None  # guardrail arms: Redis round trips for user state
    degraded: float | None = None  # guardrail arms: responses decided by a fail mode

    def warnings(self) -> list[str]:
        found = []
        if self.socket_errors:
            found.append(f"{self.socket_errors} socket errors")
        if max(self.others_server_core, self.others_client_core) > NOISE_LIMIT:
            found.append(
                f"other processes took {self.others_server_core:.0%} of core {SERVER_CORE} and "
                f"{self.others_client_core:.0%} of core {CLIENT_CORE}"
            )
        if self.kind == "closed" and self.server_cpu_share < 0.9:
            found.append(f"the server used only {self.server_cpu_share:.0%} of its core")
        if self.degraded:
            found.append(f"{self.degraded:.0f} responses were degraded (store over its time budget)")
        return found


@dataclass(slots=True)
class Plan:
    sizes: list[int]
    scaling: list[int]
    arms: list[str]
    repeats: int
    seconds: int  # closed loop, per run
    open_seconds: int  # open loop, per run, after wrk2's calibration
    warmup: int
    users: int
    connections: int
    quiet_wait: float

    def estimate_seconds(self) -> float:
        """Roughly: runs times their length, plus start-up; arms over capacity skip the open loop."""
        per_size = len(self.arms) * (self.repeats * (self.seconds + 0.7 + 0.5 * (self.open_seconds + 2.7)) + 3)
        extra = [size for size in self.scaling if size not in self.sizes]
        scaling = len(extra) * len(SCALING_ARMS) * (self.repeats * (self.seconds + 0.7) + self.warmup + 3)
        return len(self.sizes) * per_size + scaling + len(self.sizes) * len(self.arms) * self.warmup


# -- servers ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Running:
    arm: Arm
    port: int
    pid: int
    connections: int = 0  # closed-loop connections, set after the warm-up
    seconds: int = 0  # closed-loop run length: longer than the plan's for arms too slow to serve 30 requests
    verified: dict[str, Any] = field(default_factory=dict)


def fetch(
    port: int, path: str, user: str | None = BENCH_USER, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    headers = {"x-user-id": user} if user else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def verify(running: Running, size: int) -> dict[str, Any]:
    """Fail unless the arm serves what it should: a guarded arm a real decision, not an error path."""
    arm = running.arm
    status, headers, body = fetch(running.port, "/recommendations")
    if status != 200:
        raise BenchError(f"the {arm.name} arm answered {status}: {body[:500]!r}")
    document = orjson.loads(body)
    items = document.get("items", [])
    if not arm.decides:
        if len(items) != size:
            raise BenchError(f"the {arm.name} arm served {len(items)} items, not {size}")
        return {"bytes": len(body)}
    summary = document.get("guardrail") or {}
    problems = []
    if arm.guardrail and not headers.get("guardrail-decision", headers.get("Guardrail-Decision")):
        problems.append("no Guardrail-Decision header")
    if summary.get("degraded"):
        problems.append("the decision is degraded (store or body problem)")
    if not summary.get("kept") or summary.get("kept") != len(items):
        problems.append(f"no item kept, or a summary that does not match the items: {summary}")
    if any("explanation" not in item for item in items):
        problems.append("kept items lack an explanation")
    if problems:
        raise BenchError(f"the {arm.name} arm is not deciding: {'; '.join(problems)}\nbody: {body[:300]!r}")
    return {"bytes": len(body), "kept_ids": [item["id"] for item in items], "hidden": summary.get("hidden")}


@contextmanager
def arm_servers(
    names: Sequence[str], size: int, plan: Plan, loop: str, http: str, redis_url: str
) -> Iterator[dict[str, Running]]:
    """Every arm's server for one size, started one after the other and checked, then left idle."""
    with ExitStack() as stack:
        running: dict[str, Running] = {}
        for name in names:
            arm = BY_NAME[name]
            env = {key: value.replace("{redis}", redis_url) for key, value in arm.env.items()}
            env[USERS_ENV] = str(plan.users)
            port, pid = stack.enter_context(server(name, size, loop, http, factory=arm.factory, env=env))
            running[name] = Running(arm, port, pid)
            running[name].verified = verify(running[name], size)
        deciding = {name: r.verified["kept_ids"] for name, r in running.items() if r.arm.decides}
        if len({tuple(ids) for ids in deciding.values()}) > 1:
            raise BenchError(f"the deciding arms keep different items for {BENCH_USER}: {deciding}")
        yield running


def guardrail_counters(port: int) -> dict[str, float]:
    """Requests, degraded responses and store loads so far, from a guardrail arm's /metrics."""
    status, _, body = fetch(port, "/metrics", user=None)
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    found = {"requests": 0.0, "degraded": 0.0, "loads": 0.0}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "guardrail_requests_total":
                found["requests"] += sample.value
                if sample.labels.get("outcome") == "degraded":
                    found["degraded"] += sample.value
            elif sample.name == "guardrail_store_seconds_count" and sample.labels.get("op") == "load":
                found["loads"] += sample.value
    return found


# -- runs ---------------------------------------------------------------------------------------


def measured(
    running: Running, size: int, kind: str, repeat: int, plan: Plan, redis_pid: int, rate: float | None = None
) -> Sample:
    """One closed- or open-loop run, with the CPU accounting around it."""
    if running.arm.guardrail:
        # Every user's state into the store's cache: "warm" and "N% misses" are then what the run sees.
        status, _, body = fetch(running.port, "/bench/warm", user=None, method="POST")
        if status != 200:
            raise BenchError(f"warming the {running.arm.name} arm's cache failed ({status}): {body[:200]!r}")
    counters = guardrail_counters(running.port) if running.arm.guardrail else None
    cores, client_cpu = core_seconds(), children_cpu_seconds()
    server_before, redis_before, wall_before = cpu_seconds(running.pid), cpu_seconds(redis_pid), time.monotonic()
    if kind == "closed":
        connections = running.connections
        result = closed_loop(running.port, connections=connections, seconds=running.seconds, users=plan.users)
        rps, requests, latency, errors = result.rps, result.requests, result.latency_ms, result.socket_errors
    else:
        assert rate is not None
        connections = plan.connections
        opened = open_loop(
            running.port, rate=rate, connections=connections, seconds=plan.open_seconds, users=plan.users
        )
        rps, requests, latency, errors = opened.rps, opened.requests, opened.latency_ms, opened.socket_errors
    wall = time.monotonic() - wall_before
    if requests == 0:
        raise BenchError(f"no request completed in {wall:.1f} s (the server is far too slow, or stuck)")
    server_cpu = cpu_seconds(running.pid) - server_before
    redis_cpu = cpu_seconds(redis_pid) - redis_before
    client_cpu = children_cpu_seconds() - client_cpu  # the load generator is the only child reaped meanwhile
    busy = {core: seconds - cores[core] for core, seconds in core_seconds().items()}
    # wrk2 counts only the requests after its calibration; the CPU covers the whole run.
    served = requests if kind == "closed" else max(1, round(rps * wall))
    sample = Sample(
        size=size,
        arm=running.arm.name,
        kind=kind,
        repeat=repeat,
        connections=connections,
        rate=rate,
        rps=rps,
        requests=requests,
        latency_ms=latency,
        socket_errors=errors,
        server_cpu_us=server_cpu / served * 1e6,
        server_cpu_share=server_cpu / wall,
        redis_cpu_us=redis_cpu / served * 1e6,
        others_server_core=max(0.0, (busy[SERVER_CORE] - server_cpu) / wall),
        others_client_core=max(0.0, (busy[CLIENT_CORE] - client_cpu - redis_cpu) / wall),
    )
    if counters is not None:
        after = guardrail_counters(running.port)
        handled = max(1.0, after["requests"] - counters["requests"])
        sample.store_loads_per_request = (after["loads"] - counters["loads"]) / handled
        sample.degraded = after["degraded"] - counters["degraded"]
    return sample


def report_sample(sample: Sample) -> None:
    latency = sample.latency_ms
    rate = f" at {sample.rate:.0f}/s" if sample.rate else f" c={sample.connections}"
    loads = f"  loads/req {sample.store_loads_per_request:.3f}" if sample.store_loads_per_request is not None else ""
    print(
        f"  {sample.size:>4} items  {sample.kind:>6}{rate:>11}  repeat {sample.repeat}  {sample.arm:>11}: "
        f"{sample.rps:8.1f} req/s  p50 {latency.get('50', math.nan):7.2f} ms  p99 {latency.get('99', math.nan):8.2f} ms"
        f"  server {sample.server_cpu_us:7.1f} µs/req ({sample.server_cpu_share:.0%})  others "
        f"{sample.others_server_core:.0%}/{sample.others_client_core:.0%}{loads}",
        flush=True,
    )
    for warning in sample.warnings():
        print(f"    warning: {warning}", flush=True)


def closed_phase(
    running: dict[str, Running],
    size: int,
    plan: Plan,
    redis_pid: int,
    samples: list[Sample],
    failures: list[str],
    repeats: int,
) -> None:
    names = list(running)
    for repeat in range(1, repeats + 1):
        # Alternate the order, so that slow drift (other VMs, other agents) hits every arm alike.
        for name in names if repeat % 2 else names[::-1]:
            arm = running[name]
            wait_for_quiet_cores(plan.quiet_wait)
            try:
                if repeat == 1:
                    warm = closed_loop(arm.port, connections=plan.connections, seconds=plan.warmup, users=plan.users)
                    wanted = math.ceil(warm.rps * TARGET_QUEUE_SECONDS)
                    # At least 8 (a few requests always queued), but 2 for arms of a few requests a second.
                    arm.connections = min(plan.connections, max(2 if warm.rps < 100 else 8, wanted))
                    arm.seconds = max(plan.seconds, min(15, math.ceil(30 / max(warm.rps, 2.0))))
                sample = measured(arm, size, "closed", repeat, plan, redis_pid)
            except BenchError as exc:  # one arm's bad run: said, left out, and the others go on
                failures.append(f"{size} items, closed loop, repeat {repeat}, {name}: {str(exc)[:300]}")
                print(f"    error: {failures[-1]}", flush=True)
                continue
            samples.append(sample)
            report_sample(sample)


def open_phase(
    running: dict[str, Running],
    size: int,
    plan: Plan,
    redis_pid: int,
    samples: list[Sample],
    failures: list[str],
    rate: float,
) -> list[str]:
    """Each arm that can take `rate` at wrk2's fixed rate; returns the arms that cannot."""
    capacity = {
        name: statistics.median([s.rps for s in samples if (s.size, s.arm, s.kind) == (size, name, "closed")] or [0])
        for name in running
    }
    able = [name for name in running if capacity[name] >= rate * OVER_CAPACITY]
    for repeat in range(1, plan.repeats + 1):
        for name in able if repeat % 2 else able[::-1]:
            wait_for_quiet_cores(plan.quiet_wait)
            try:
                sample = measured(running[name], size, "open", repeat, plan, redis_pid, rate)
            except BenchError as exc:
                failures.append(f"{size} items, open loop, repeat {repeat}, {name}: {str(exc)[:300]}")
                print(f"    error: {failures[-1]}", flush=True)
                continue
            samples.append(sample)
            report_sample(sample)
    return [name for name in running if name not in able]


# -- the run ------------------------------------------------------------------------------------


def run(plan: Plan, loop: str, http: str) -> dict[str, Any]:
    samples: list[Sample] = []
    failures: list[str] = []
    sizes: dict[int, dict[str, Any]] = {}
    with RedisServer() as redis:
        assert redis.process is not None
        assert redis.port != 6379
        os.sched_setaffinity(redis.process.pid, {int(CLIENT_CORE)})
        # Redis shares the client core with the load generator (and, on a shared machine, with others):
        # ahead of them in the queue it answers within the guardrail's 20 ms budget, as a Redis on a
        # host of its own would. It uses little CPU, so this takes little from anyone.
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, redis.process.pid, -10)
        print(f"redis-server at {redis.url} on core {CLIENT_CORE}", flush=True)
        for size in sorted(set(plan.sizes) | set(plan.scaling)):
            main = size in plan.sizes
            names = plan.arms if main else [n for n in SCALING_ARMS if n in plan.arms]
            document = recommendation_document(size)
            print(f"\n{size} items: starting {len(names)} servers ...", flush=True)
            with arm_servers(names, size, plan, loop, http, redis.url) as running:
                closed_phase(running, size, plan, redis.process.pid, samples, failures, plan.repeats)
                bare_runs = [s.rps for s in samples if (s.size, s.arm, s.kind) == (size, "bare", "closed")]
                if not bare_runs:
                    raise BenchError(f"every run of the bare app failed at {size} items: nothing to compare with")
                bare = statistics.median(bare_runs)
                rate = bare / 2
                skipped: list[str] = []
                if main:
                    print(f"  open loop at {rate:.0f} req/s (half the bare app's {bare:.0f})", flush=True)
                    skipped = open_phase(running, size, plan, redis.process.pid, samples, failures, rate)
                guardrail = running.get("guardrail")
                # Timed once the cores are idle again. Even so this long-running process reads 52 to 54 µs
                # where overhead.py's fresh one reads 33 to 35 µs for the same body (cause not found:
                # the same function, on the same core); the report gives both yardsticks.
                wait_for_quiet_cores(plan.quiet_wait)
                orjson_in_process = orjson_roundtrip_us(orjson.dumps(document))
                sizes[size] = {
                    "main": main,
                    "body_bytes": len(orjson.dumps(document)),
                    "distinct_shapes": distinct_shapes(document),
                    "orjson_in_process_us": orjson_in_process,
                    "rate": rate if main else None,
                    "over_capacity": skipped,
                    "connections": {name: r.connections for name, r in running.items()},
                    "guarded": {k: v for k, v in guardrail.verified.items() if k != "kept_ids"} if guardrail else {},
                    "kept": len(guardrail.verified["kept_ids"]) if guardrail else None,
                }
    return {"samples": [asdict(s) for s in samples], "sizes": sizes, "failures": failures}


def make_plan(args: argparse.Namespace) -> Plan:
    def numbers(text: str) -> list[int]:
        return [int(part) for part in text.split(",") if part.strip()]

    arms = [name.strip() for name in args.arms.split(",")] if args.arms else [arm.name for arm in ARMS]
    unknown = [name for name in arms if name not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; the arms are: {', '.join(BY_NAME)}")
    for needed in ("bare", "orjson"):
        if needed not in arms:
            arms.insert(0, needed)  # every figure is relative to these two
    quick = args.quick
    return Plan(
        sizes=numbers(args.sizes or ("50" if quick else "50,200")),
        scaling=numbers(args.scaling if args.scaling is not None else ("10,1000" if quick else "10,50,200,1000")),
        arms=[name for name in BY_NAME if name in arms],
        repeats=args.repeats or (1 if quick else 3),
        seconds=args.seconds or (1 if quick else 3),
        open_seconds=args.open_seconds or (1 if quick else 3),
        warmup=args.warmup or 1,
        users=args.users or (100 if quick else 1000),
        connections=args.connections,
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (2 if quick else 20),
    )


def dry_run(plan: Plan) -> int:
    """Build every arm in process (no server, no load), serve one request each, check the answers."""
    from arms_check import decisions_by_arm  # imported here: only the dry run needs httpx

    with RedisServer() as redis:
        for size in plan.sizes:
            found = asyncio.run(decisions_by_arm(size, redis.url))
            kept = {name: tuple(result.kept) for name, result in found.items()}
            for name, result in found.items():
                print(f"  {size} items, {name:>9}: kept {len(result.kept)}, hidden {len(result.hidden)}")
            if len(set(kept.values())) != 1:
                print(f"error: the arms disagree on what to keep for {size} items", file=sys.stderr)
                return 1
    print(f"plan: {asdict(plan)}")
    print(f"estimated duration of this plan: {plan.estimate_seconds() / 60:.1f} minutes")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run: one repeat of 1 s runs, 50 items")
    parser.add_argument("--dry-run", action="store_true", help="check every arm in process; no servers, no load")
    parser.add_argument("--sizes", help="items per response for the arm comparison (default 50,200)")
    parser.add_argument("--scaling", help="items per response for the scaling run (default 10,50,200,1000; '' skips)")
    parser.add_argument("--arms", help=f"a subset of the arms, comma-separated (default all: {','.join(BY_NAME)})")
    parser.add_argument("--repeats", type=int, help="measured runs per arm and kind (default 3)")
    parser.add_argument("--seconds", type=int, help="seconds per closed-loop run (default 3)")
    parser.add_argument("--open-seconds", type=int, help="seconds per open-loop run, after wrk2's 2 s calibration")
    parser.add_argument("--warmup", type=int, help="seconds of closed-loop warm-up per server (default 1)")
    parser.add_argument("--users", type=int, help="users the requests go to in turn (default 1000)")
    parser.add_argument("--connections", type=int, default=32, help="load generator connections (default 32)")
    parser.add_argument("--quiet-wait", type=float, help="seconds to wait for quiet cores before each run (default 20)")
    parser.add_argument(
        "--upstream-work-us",
        type=int,
        default=0,
        help="CPU µs the upstream spends per request, as a recommender would (default 0: a prepared body); "
        "results go to suite-work<N>us.*",
    )
    args = parser.parse_args(argv)
    if args.upstream_work_us:
        os.environ[WORK_ENV] = str(args.upstream_work_us)  # every server this run starts inherits it
    plan = make_plan(args)
    if args.dry_run:
        return dry_run(plan)

    from suite_report import write_report  # imported here: matplotlib is slow to import

    started = time.monotonic()
    try:
        if (os.cpu_count() or 1) < 2:
            raise BenchError("the suite needs two CPU cores: one for the servers, one for the load generator")
        ensure_tools()
        wrk2_binary()
        loop, http = server_options()
        print(
            f"plan: {len(plan.arms)} arms x sizes {plan.sizes}, scaling {plan.scaling}, {plan.repeats} repeats; "
            f"estimated {plan.estimate_seconds() / 60:.1f} minutes (more if other processes keep the cores busy)",
            flush=True,
        )
        sources = source_fingerprint()
        data = run(plan, loop, http)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    warnings = []
    if source_fingerprint() != sources:
        warnings.append("the guardrail sources changed during the run: its runs measured different code")
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/suite.py", *(sys.argv[1:] if argv is None else argv)]),
        "seconds": time.monotonic() - started,
        "plan": asdict(plan),
        "server": {"loop": loop, "http": http},
        "guardrail_sources": sources,
        "upstream_work_us": args.upstream_work_us,
        "machine": machine_info(),
        "warnings": warnings,
        **data,
    }
    work = f"-work{args.upstream_work_us}us" if args.upstream_work_us else ""
    stem = f"suite{work}" + ("-quick" if args.quick else "")
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"{stem}.json"
    raw.write_text(json.dumps(report, indent=2) + "\n")  # first: the measurements survive a report bug
    written = write_report(report, RESULTS, stem)  # adds the summary to the report
    raw.write_text(json.dumps(report, indent=2) + "\n")
    written.append(raw)
    print(f"\ntotal {report['seconds'] / 60:.1f} minutes; wrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
