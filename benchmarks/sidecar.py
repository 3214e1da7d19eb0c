"""What `guardrail serve` adds in front of a service, against the service alone.

    python benchmarks/sidecar.py [--duration 5] [--repeats 2] [--connections 32]      # about 2 minutes

The upstream is the bare app of the overhead benchmark (`apps:make_bare`: a 50-item recommendation
body). Three arms, wrk asking each for /recommendations:

- `upstream`: the upstream alone;
- `unguarded`: through `guardrail serve` with a policy that does not guard /recommendations (the proxy only);
- `guarded`: through `guardrail serve` with the demo policy (proxy + the guardrail's check of 50 items).

The upstream and the sidecar share core 0, wrk runs on core 1 (see overhead.py). With core 0
saturated, 1/rps is the CPU both servers spend per request, so (1/rps_arm - 1/rps_upstream) is what
the sidecar adds. A second wrk run with one connection gives the latency a single request pays.
Results go to benchmarks/results/sidecar.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from apps import BENCH_USER, ITEMS_ENV
from clients import CLIENTS, fetcher
from harness import (
    CLIENT_CORE,
    RESULTS,
    ROOT,
    SERVER_CORE,
    BenchError,
    machine_info,
    process_answering,
    server,
    server_options,
    source_fingerprint,
    wait_for_quiet_cores,
)
from harness import core_seconds as _core_seconds
from harness import cpu_seconds as _cpu_seconds
from harness import free_port as _free_port
from overhead import (
    run_wrk,
    verify,
)

ARMS = ("upstream", "unguarded", "guarded")
DEMO_POLICY = ROOT / "config" / "guardrail.yaml"


@contextmanager
def sidecar(upstream_port: int, policy: Path) -> Iterator[tuple[int, int]]:
    """`guardrail serve` on core 0 in front of the upstream: yields (port, pid) once it is ready."""
    port = _free_port()
    command = [
        "taskset", "-c", SERVER_CORE, sys.executable, "-m", "guardrail.cli", "serve", "--config", str(policy),
        "--upstream", f"http://127.0.0.1:{upstream_port}", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    ready = f"http://127.0.0.1:{port}/guardrail/readyz"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    with process_answering(command, ready, "guardrail serve", env) as pid:
        yield port, pid


def grant_consent(port: int) -> None:
    """The bench user says yes, so that the guarded arm checks personalized items (not the popular route)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/guardrail/v1/controls",
        data=orjson.dumps({"consent": {"personalization": "granted"}}),
        method="PATCH",
        headers={"x-user-id": BENCH_USER, "content-type": "application/merge-patch+json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        if response.status != 200:
            raise BenchError(f"granting consent answered {response.status}")


def unguarded_policy(directory: Path) -> Path:
    """The demo policy guarding some other route: /recommendations goes through the proxy only."""
    data = yaml.safe_load(DEMO_POLICY.read_text())
    data["routes"] = [{"path": "/guarded-elsewhere", "items": "/items"}]
    path = directory / "unguarded.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def measure_arm(arm: str, port: int, pids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    summary = verify("guarded" if arm == "guarded" else "bare", port, args.items)
    if arm == "unguarded":
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/recommendations", timeout=5) as response:
            if response.headers.get("guardrail-decision"):
                raise BenchError("the unguarded arm is guarded")
    wait_for_quiet_cores(args.quiet_wait)
    run_wrk(port, args.connections, args.warmup)
    cpu, cores, wall = [_cpu_seconds(pid) for pid in pids], _core_seconds(), time.monotonic()
    saturated = run_wrk(port, args.connections, args.duration)
    cpu = [_cpu_seconds(pid) - before for pid, before in zip(pids, cpu, strict=True)]
    # Busy time of core 0 that was not our servers': other processes on this shared machine.
    others = max(0.0, (_core_seconds()[SERVER_CORE] - cores[SERVER_CORE] - sum(cpu)) / (time.monotonic() - wall))
    light = run_wrk(port, 1, args.light_duration)
    result = {
        "rps": saturated.rps,
        "cpu_us": sum(cpu) / saturated.requests * 1e6,  # upstream and sidecar together, per request
        "sidecar_cpu_us": cpu[1] / saturated.requests * 1e6 if len(cpu) > 1 else 0.0,
        "p50_ms": light.latency_ms["50"],
        "p99_ms": light.latency_ms["99"],
        "others_core_share": others,
        "socket_errors": saturated.socket_errors + light.socket_errors,
        "verified": summary,
    }
    print(
        f"  {arm:>9}: {saturated.rps:8.0f} req/s, CPU {result['cpu_us']:6.1f} µs/req "
        f"(sidecar {result['sidecar_cpu_us']:6.1f}); one connection p50 {light.latency_ms['50']:.2f} ms, "
        f"p99 {light.latency_ms['99']:.2f} ms; others on core {SERVER_CORE}: {others:.0%}",
        flush=True,
    )
    return result


async def _client_costs(port: int, requests: int) -> dict[str, float]:
    """CPU µs per request, in this process, of fetching the upstream's answer one request at a time
    with each of `clients.CLIENTS`."""
    costs = {}
    for client in CLIENTS:
        async with fetcher(client, port) as fetch:
            for _ in range(50):  # warm: connection open, code paths run once
                await fetch()
            started = time.process_time()
            for _ in range(requests):
                await fetch()
            costs[client] = (time.process_time() - started) / requests * 1e6
    return costs


def client_costs(port: int, requests: int = 1000) -> dict[str, float]:
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(SERVER_CORE)})
    try:
        return asyncio.run(_client_costs(port, requests))
    finally:
        os.sched_setaffinity(0, cores)


def measure(
    args: argparse.Namespace, loop: str, http: str, policies: dict[str, Path]
) -> tuple[list[dict[str, Any]], list[dict[str, float]]]:
    runs, clients = [], []
    for repeat in range(args.repeats):
        with server("bare", args.items, loop, http) as (upstream_port, upstream_pid):
            clients.append(client_costs(upstream_port))
            print(f"  client CPU per request: {clients[-1]}", flush=True)
            order = ARMS if repeat % 2 == 0 else ARMS[::-1]
            for arm in order:
                with ExitStack() as stack:
                    port, pids = upstream_port, [upstream_pid]
                    if arm != "upstream":
                        port, pid = stack.enter_context(sidecar(upstream_port, policies[arm]))
                        pids.append(pid)
                        if arm == "guarded":
                            grant_consent(port)
                    runs.append({"arm": arm, "repeat": repeat + 1, **measure_arm(arm, port, pids, args)})
    return runs, clients


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]], clients: list[dict[str, float]]) -> dict[str, Any]:
    by_arm = {arm: [run for run in runs if run["arm"] == arm] for arm in ARMS}
    summary: dict[str, Any] = {
        arm: {
            key: _spread([run[key] for run in mine]) for key in ("rps", "cpu_us", "sidecar_cpu_us", "p50_ms", "p99_ms")
        }
        for arm, mine in by_arm.items()
    }
    for arm in ("unguarded", "guarded"):
        pairs = list(zip(by_arm["upstream"], by_arm[arm], strict=True))
        summary[arm]["added_cpu_us"] = _spread([(1 / run["rps"] - 1 / base["rps"]) * 1e6 for base, run in pairs])
        summary[arm]["added_p50_ms"] = _spread([run["p50_ms"] - base["p50_ms"] for base, run in pairs])
        summary[arm]["added_p99_ms"] = _spread([run["p99_ms"] - base["p99_ms"] for base, run in pairs])
    summary["client_cpu_us"] = {name: _spread([costs[name] for costs in clients]) for name in clients[0]}
    return summary


def markdown(report: dict[str, Any]) -> str:
    s, setup = report["summary"], report["setup"]

    def row(label: str, spread: dict[str, float], fmt: str) -> str:
        return f"| {label} | {spread['median']:{fmt}} | {spread['min']:{fmt}} to {spread['max']:{fmt}} |"

    rows = []
    for arm in ("unguarded", "guarded"):
        rows += [
            row(f"**{arm}: the sidecar's own CPU, µs/req** (/proc, saturated)", s[arm]["sidecar_cpu_us"], ".0f"),
            row(f"**{arm}: latency added, p50 ms** (one connection)", s[arm]["added_p50_ms"], ".2f"),
            row(f"{arm}: latency added, p99 ms (one connection)", s[arm]["added_p99_ms"], ".2f"),
            row(f"{arm}: CPU added, µs/req (1/rps - 1/rps_upstream)", s[arm]["added_cpu_us"], ".0f"),
        ]
    for arm in ARMS:
        rows += [
            row(f"{arm}: req/s", s[arm]["rps"], ".0f"),
            row(f"{arm}: CPU µs/req, upstream + sidecar (/proc)", s[arm]["cpu_us"], ".0f"),
            row(f"{arm}: latency p50 at one connection, ms", s[arm]["p50_ms"], ".2f"),
        ]
    rows += [row(f"client CPU µs/req in process: {name}", spread, ".0f") for name, spread in s["client_cpu_us"].items()]
    return "\n".join(
        [
            "# What `guardrail serve` adds in front of a service",
            "",
            f"Run {report['date']} with `{report['command']}`, on guardrail sources {report['guardrail_sources']}.",
            "",
            f"Upstream: `apps:make_bare` ({setup['items']} items), uvicorn `--loop {setup['loop']} --http "
            f"{setup['http']}`; `guardrail serve` with one worker. Both on core {SERVER_CORE}; wrk on core "
            f"{CLIENT_CORE}: `-c{setup['connections']} -d{setup['duration']}s` after a {setup['warmup']} s "
            f"warm-up for req/s and CPU, then `-c1 -d{setup['light_duration']}s` for latency. "
            f"{setup['repeats']} repeats, arms alternating. `unguarded`: a policy that guards another route, so "
            "the request only goes through the proxy; `guarded`: the demo policy, 50 items checked "
            "and annotated. Client CPU: one request at a time to the upstream from this process on core "
            f"{SERVER_CORE}, with each client of benchmarks/clients.py: `ConnectionPool` is the sidecar's "
            "(`guardrail.sidecar.http1`), `httpx.AsyncClient` the one it had before, the same over `ConnectionPool` "
            "what httpx's own layer costs, asyncio streams the least an asyncio client can do.",
            "",
            "| | median | min to max |",
            "|---|---:|---:|",
            *rows,
            "",
            "| repeat | arm | req/s | CPU µs/req | sidecar CPU µs/req | p50 ms (c1) | p99 ms (c1) "
            f"| others on core {SERVER_CORE} |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {r['repeat']} | {r['arm']} | {r['rps']:.0f} | {r['cpu_us']:.1f} | {r['sidecar_cpu_us']:.1f} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['others_core_share']:.0%} |"
                for r in report["runs"]
            ),
            "",
            "The sidecar's own CPU per request (from /proc) is the figure to read: the req/s figures, and "
            "the CPU added computed from them, hold only while the servers saturate their core, which "
            "other processes on a shared machine prevent (last column). The client rows say what the "
            "sidecar's HTTP client costs of it; the same in instructions, unmoved by other processes: "
            "benchmarks/results/clients.md. The guarded arm adds the guardrail's own work "
            "(benchmarks/results/overhead.md).",
            "",
            "Machine: " + ", ".join(f"{key} {value}" for key, value in report["machine"].items()) + ".",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50, help="items per response (default 50)")
    parser.add_argument("--duration", type=int, default=5, help="seconds of saturated load per run (default 5)")
    parser.add_argument("--light-duration", type=int, default=2, help="seconds at one connection (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per arm (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections when saturating (default 32)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per run (default 1)")
    parser.add_argument("--quiet-wait", type=float, default=5, help="seconds to wait for idle cores (default 5)")
    args = parser.parse_args(argv)

    loop, http = server_options()
    with tempfile.TemporaryDirectory() as directory:
        policies = {"unguarded": unguarded_policy(Path(directory)), "guarded": DEMO_POLICY}
        try:
            runs, clients = measure(args, loop, http, policies)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/sidecar.py", *sys.argv[1:]]),
        "setup": {**vars(args), "loop": loop, "http": http, ITEMS_ENV: args.items},
        "guardrail_sources": source_fingerprint(),
        "machine": machine_info(),
        "summary": summarize(runs, clients),
        "runs": runs,
        "clients": clients,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sidecar.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "sidecar.md").write_text(markdown(report))
    s = report["summary"]
    for arm in ("unguarded", "guarded"):
        print(
            f"{arm:>9}: +{s[arm]['added_cpu_us']['median']:.1f} µs CPU/req, "
            f"+{s[arm]['added_p50_ms']['median']:.2f} ms p50 at one connection"
        )
    print(f"written to {RESULTS / 'sidecar.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
