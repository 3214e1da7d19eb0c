"""CPU the guardrail adds per guarded response, against the bare app in the same run (docs/architecture.md §10).

    python benchmarks/overhead.py [--items 50] [--duration 10] [--repeats 3] [--connections 32]

Each arm (`bare`, `guarded`: see `apps.py`) runs as its own uvicorn process pinned to core 0, one
at a time, and wrk drives it from core 1 with enough connections to saturate it. With the server
core saturated, 1/rps is its CPU time per request, so the guardrail adds
(1/rps_guarded - 1/rps_bare) per request. The budget compares that to an in-process orjson
loads + dumps of the same body. Results go to benchmarks/results/overhead.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from apps import BENCH_USER, distinct_shapes, recommendation_document
from harness import (
    CLIENT_CORE,
    NOISE_LIMIT,
    RESULTS,
    SERVER_CORE,
    BenchError,
    WrkResult,
    children_cpu_seconds,
    core_seconds,
    cpu_seconds,
    machine_info,
    orjson_roundtrip_us,
    parse_wrk,
    server,
    server_options,
    source_fingerprint,
    spread,
    wait_for_quiet_cores,
)

BUDGET_RATIO = 3.0
ARMS = ("bare", "orjson", "guarded")


@dataclass(frozen=True, slots=True)
class Run:
    arm: str
    repeat: int
    wrk: WrkResult
    server_cpu_us: float  # the server's user+system CPU over the run, per request
    server_cpu_share: float  # of one core, over the run: near 1.0 when saturated
    # Share of each core's time, over the run, that went to neither the server nor wrk: other
    # processes, interrupts, time stolen by the hypervisor. Above a few % the req/s are suspect.
    others_server_core: float
    others_client_core: float
    # orjson loads + dumps of the body, timed on the server's core just before this run: the
    # machine's speed drifts (other VMs on the host), so each run carries its own yardstick.
    orjson_us: float
    # The guardrail's own measure of what it adds (guardrail_overhead_seconds, mean over the run):
    # wall time inside the middleware, upstream excluded. None for the bare arm.
    self_measured_us: float | None


# -- wrk ----------------------------------------------------------------------------------------


def wrk_command(port: int, connections: int, duration: int) -> list[str]:
    return [
        "taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
        "-H", f"x-user-id: {BENCH_USER}", f"http://127.0.0.1:{port}/recommendations",
    ]  # fmt: skip


def run_wrk(port: int, connections: int, duration: int) -> WrkResult:
    done = subprocess.run(wrk_command(port, connections, duration), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


def overhead_histogram(port: int) -> tuple[float, float]:
    """(sum, count) of guardrail_overhead_seconds, from the guarded app's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = dict(re.findall(r"^guardrail_overhead_seconds_(sum|count) (\S+)$", text, re.M))
    if len(found) != 2:
        raise BenchError("the guarded app's /metrics has no guardrail_overhead_seconds histogram")
    return float(found["sum"]), float(found["count"])


def verify(arm: str, port: int, items: int) -> dict[str, Any]:
    """Fail unless the arm serves what it should: for the guarded one, a real decision, not an error path."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/recommendations", headers={"x-user-id": BENCH_USER})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        raise BenchError(f"the {arm} arm answered {exc.code}: {exc.read()[:500]!r}") from None
    document = orjson.loads(body)
    if status != 200 or not isinstance(document, dict):
        raise BenchError(f"the {arm} arm answered {status} with {body[:200]!r}")
    if arm in ("bare", "orjson"):
        if len(document.get("items", ())) != items:
            raise BenchError(f"the {arm} arm served {len(document.get('items', ()))} items, not {items}")
        return {}
    summary = document.get("guardrail")
    problems = []
    if not headers.get("guardrail-decision"):
        problems.append("no Guardrail-Decision header")
    if not isinstance(summary, dict):
        problems.append("no `guardrail` summary in the body")
    else:
        if summary.get("degraded"):
            problems.append("the decision is degraded (store or body problem)")
        if not summary.get("kept"):
            problems.append("no item was kept: is consent granted for the bench user?")
        explained = [i for i in document.get("items", ()) if "explanation" in i]
        if len(explained) != summary.get("kept"):
            problems.append("kept items lack an explanation")
    if problems:
        raise BenchError(
            "the guarded arm is not serving guarded recommendations: "
            + "; ".join(problems)
            + f"\nheaders: {dict(headers)}\nbody: {body[:300]!r}"
        )
    assert isinstance(summary, dict)
    return {**summary, "hidden_header": headers.get("guardrail-hidden"), "bytes": len(body)}


# -- the run ------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, loop: str, http: str, body: bytes) -> tuple[list[Run], dict[str, Any]]:
    runs: list[Run] = []
    verified: dict[str, Any] = {}
    for repeat in range(args.repeats):
        # Alternate which arm goes first, so slow drift (thermal, noisy neighbours) hits both alike.
        order = ARMS if repeat % 2 == 0 else ARMS[::-1]
        for arm in order:
            with server(arm, args.items, loop, http) as (port, pid):
                summary = verify(arm, port, args.items)
                if arm == "guarded" and not verified:
                    verified = summary
                    print(f"  verified: guarded response {summary}", flush=True)
                wait_for_quiet_cores(args.quiet_wait)
                orjson_us = orjson_roundtrip_us(body)
                if args.warmup > 0:
                    run_wrk(port, args.connections, args.warmup)
                histogram = overhead_histogram(port) if arm == "guarded" else None
                cores, wrk_cpu = core_seconds(), children_cpu_seconds()
                cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
                result = run_wrk(port, args.connections, args.duration)
                cpu = cpu_seconds(pid) - cpu_before
                wall = time.monotonic() - wall_before
                wrk_cpu = children_cpu_seconds() - wrk_cpu  # wrk is the only child reaped meanwhile
                cores = {core: busy - cores[core] for core, busy in core_seconds().items()}
                self_measured = None
                if histogram is not None:
                    total, count = overhead_histogram(port)
                    self_measured = (total - histogram[0]) / (count - histogram[1]) * 1e6
            run = Run(
                arm,
                repeat + 1,
                result,
                server_cpu_us=cpu / result.requests * 1e6,
                server_cpu_share=cpu / wall,
                others_server_core=max(0.0, (cores[SERVER_CORE] - cpu) / wall),
                others_client_core=max(0.0, (cores[CLIENT_CORE] - wrk_cpu) / wall),
                orjson_us=orjson_us,
                self_measured_us=self_measured,
            )
            runs.append(run)
            print(
                f"  repeat {repeat + 1} {arm:>7}: {result.rps:9.1f} req/s"
                f"  p50 {result.latency_ms.get('50', float('nan')):.2f} ms"
                f"  p99 {result.latency_ms.get('99', float('nan')):.2f} ms"
                f"  server CPU {run.server_cpu_us:.1f} µs/req ({run.server_cpu_share:.0%} of core {SERVER_CORE})"
                f"  others on cores {SERVER_CORE}/{CLIENT_CORE}: "
                f"{run.others_server_core:.0%}/{run.others_client_core:.0%}  orjson {orjson_us:.1f} µs"
                + (f"  self-measured {self_measured:.1f} µs" if self_measured is not None else ""),
                flush=True,
            )
            for warning in run_warnings(run):
                print(f"    warning: {warning}", flush=True)
    return runs, verified


def run_warnings(run: Run) -> list[str]:
    warnings = []
    if run.wrk.socket_errors:
        warnings.append(f"{run.wrk.socket_errors} socket errors")
    if max(run.others_server_core, run.others_client_core) > NOISE_LIMIT:
        warnings.append(
            f"other processes took {run.others_server_core:.0%} of core {SERVER_CORE} and "
            f"{run.others_client_core:.0%} of core {CLIENT_CORE}: req/s are low, trust the /proc CPU figures more"
        )
    elif run.server_cpu_share < 0.9:
        warnings.append(f"the server used only {run.server_cpu_share:.0%} of its core: add --connections")
    return warnings


def summarize(runs: list[Run]) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in runs if r.arm == arm]
        arms[arm] = {
            "rps": spread([r.wrk.rps for r in mine]),
            "latency_ms": {
                p: spread([r.wrk.latency_ms[p] for r in mine if p in r.wrk.latency_ms])
                for p in ("50", "75", "90", "99")
            },
            "server_cpu_us_per_request": spread([r.server_cpu_us for r in mine]),
            "server_cpu_share": spread([r.server_cpu_share for r in mine]),
        }
    bare, guarded = arms["bare"]["rps"]["median"], arms["guarded"]["rps"]["median"]
    # Within each repeat the two arms ran back to back: the difference and the yardstick of one repeat
    # come from the same few seconds of the machine's drifting speed.
    pairs = [
        (b, g)
        for b, g in zip([r for r in runs if r.arm == "bare"], [r for r in runs if r.arm == "guarded"], strict=True)
    ]
    added = [(1 / g.wrk.rps - 1 / b.wrk.rps) * 1e6 for b, g in pairs]
    yardstick = [min(b.orjson_us, g.orjson_us) for b, g in pairs]
    ratios = [a / o for a, o in zip(added, yardstick, strict=True)]
    ratios_proc = [(g.server_cpu_us - b.server_cpu_us) / o for (b, g), o in zip(pairs, yardstick, strict=True)]
    headline = (1 / guarded - 1 / bare) * 1e6
    ratio = headline / statistics.median(yardstick)
    # The same yardstick measured in the server: the orjson arm's 1/rps minus the bare arm's.
    orjson_rps = arms["orjson"]["rps"]["median"]
    in_server = (1 / orjson_rps - 1 / bare) * 1e6
    orjson_runs = [r for r in runs if r.arm == "orjson"]
    in_server_per_repeat = [
        (1 / o.wrk.rps - 1 / b.wrk.rps) * 1e6
        for b, o in zip([r for r in runs if r.arm == "bare"], orjson_runs, strict=True)
    ]
    ratio_in_server = headline / in_server
    return {
        "orjson_in_server_us": in_server,
        "orjson_in_server_us_per_repeat": spread(in_server_per_repeat),
        "ratio_in_server": ratio_in_server,
        "verdict_in_server": "PASS" if ratio_in_server <= BUDGET_RATIO else "OVER",
        "arms": arms,
        "added_us": headline,  # from each arm's median req/s
        "added_us_per_repeat": spread(added),
        "added_cpu_us_from_proc_per_repeat": spread([g.server_cpu_us - b.server_cpu_us for b, g in pairs]),
        "orjson_roundtrip_us_per_repeat": spread(yardstick),
        "ratio": ratio,  # headline added / median yardstick
        "ratio_per_repeat": spread(ratios),
        "ratio_from_proc_per_repeat": spread(ratios_proc),
        "self_measured_us": spread([r.self_measured_us for r in runs if r.self_measured_us is not None]),
        "warnings": [f"repeat {r.repeat} {r.arm}: {w}" for r in runs for w in run_warnings(r)],
        "budget_ratio": BUDGET_RATIO,
        "verdict": "PASS" if ratio <= BUDGET_RATIO else "OVER",
    }


def _row(label: str, spread: dict[str, float], fmt: str, median: float | None = None) -> str:
    middle = spread["median"] if median is None else median
    return f"| {label} | {middle:{fmt}} | {spread['min']:{fmt}} to {spread['max']:{fmt}} |"


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    arms = s["arms"]
    setup, verified = report["setup"], report["verified"]
    rows = []
    for arm in ARMS:
        rows += [
            _row(f"{arm} req/s", arms[arm]["rps"], ".0f"),
            _row(f"{arm} p50 latency, ms", arms[arm]["latency_ms"]["50"], ".2f"),
            _row(f"{arm} p99 latency, ms", arms[arm]["latency_ms"]["99"], ".2f"),
            _row(f"{arm} server CPU µs/req (/proc)", arms[arm]["server_cpu_us_per_request"], ".1f"),
        ]
    lines = [
        "# Guardrail overhead (docs/architecture.md §10)",
        "",
        f"Run {report['date']} with `{report['command']}`, on guardrail sources {report['guardrail_sources']} "
        "(sha256 of guardrail/**/*.py, first 12 hex digits).",
        "",
        f"{setup['items']} items ({setup['body_bytes']} bytes, {setup['distinct_shapes']} distinct item "
        f"shapes); the guarded answer is {verified.get('bytes', '?')} bytes with "
        f"{verified.get('kept', '?')} items kept and {verified.get('hidden', '?')} hidden. "
        f"uvicorn `--loop {setup['loop']} --http {setup['http']}`, one process on core {SERVER_CORE}; "
        f"`wrk -t1 -c{setup['connections']} -d{setup['duration']:g}s --latency` on core {CLIENT_CORE}, "
        f"after a {setup['warmup']:g} s warm-up; {setup['repeats']} repeats per arm, alternating.",
        "",
        "| | median | min to max |",
        "|---|---:|---:|",
        *rows,
        _row("**CPU added, µs/req** (1/rps_g - 1/rps_b)", s["added_us_per_repeat"], ".1f", s["added_us"]),
        _row("CPU added, µs/req, from /proc (cross-check)", s["added_cpu_us_from_proc_per_repeat"], ".1f"),
        _row(
            f"orjson loads + dumps of the body, µs (best of 7, on core {SERVER_CORE}, before each run)",
            s["orjson_roundtrip_us_per_repeat"],
            ".1f",
        ),
        f"| **ratio added / orjson** (budget ≤ {s['budget_ratio']:g}) | **{s['ratio']:.2f} {s['verdict']}** "
        f"| {s['ratio_per_repeat']['min']:.2f} to {s['ratio_per_repeat']['max']:.2f} |",
        _row("ratio from the /proc CPU figures", s["ratio_from_proc_per_repeat"], ".2f"),
        _row(
            "orjson round trip measured in the server, µs/req (1/rps_orjson - 1/rps_b)",
            s["orjson_in_server_us_per_repeat"],
            ".1f",
            s["orjson_in_server_us"],
        ),
        f"| **ratio added / orjson in the server** (budget ≤ {s['budget_ratio']:g}) "
        f"| **{s['ratio_in_server']:.2f} {s['verdict_in_server']}** | |",
        _row("guardrail_overhead_seconds mean, µs (the middleware's own timer)", s["self_measured_us"], ".1f"),
        "",
        *([*(f"**Warning**: {warning}.  " for warning in s["warnings"]), ""] if s["warnings"] else []),
        "| repeat | arm | req/s | p50 ms | p99 ms | server CPU µs/req | server share of its core "
        f"| others on core {SERVER_CORE} | others on core {CLIENT_CORE} | orjson µs | own timer µs |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['repeat']} | {r['arm']} | {r['wrk']['rps']:.0f} | {r['wrk']['latency_ms'].get('50', 0):.2f} "
            f"| {r['wrk']['latency_ms'].get('99', 0):.2f} | {r['server_cpu_us']:.1f} | {r['server_cpu_share']:.0%} "
            f"| {r['others_server_core']:.0%} | {r['others_client_core']:.0%} | {r['orjson_us']:.1f} "
            f"| {'' if r['self_measured_us'] is None else format(r['self_measured_us'], '.1f')} |"
            for r in report["runs"]
        ),
        "",
        "The headline CPU added comes from each arm's median req/s and the headline ratio divides it by the "
        "median orjson time; the min to max columns are the per-repeat values (the two arms of a repeat run "
        "back to back, each with its own orjson yardstick, as the machine's speed drifts). The /proc "
        "figures are the server process's own CPU time per request, less sensitive to other processes on "
        "the machine. The middleware's own timer (guardrail_overhead_seconds) is wall time and includes "
        "handing the whole response to the server, which the bare app pays too, so it reads high. "
        "Latencies are at saturation (closed-loop wrk), "
        'not the budget\'s "p99 added latency at half the bare saturation rate", which needs an '
        "open-loop, fixed-rate client such as wrk2.",
        "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in report["machine"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50, help="items per response (default 50)")
    # wrk takes whole seconds only.
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per arm (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (default 2)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="seconds to wait, before each run, for other processes to leave cores 0 and 1 (default 120)",
    )
    args = parser.parse_args(argv)

    missing = [
        f"{tool} (install it with `{fix}`)"
        for tool, fix in (("wrk", "apt-get install wrk"), ("taskset", "apt-get install util-linux"))
        if shutil.which(tool) is None
    ]
    if missing:
        print(f"overhead.py needs {' and '.join(missing)}.", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("overhead.py needs two CPU cores: one for the server, one for wrk.", file=sys.stderr)
        return 2

    loop, http = server_options()
    if (loop, http) != ("uvloop", "httptools"):
        print(
            f"note: running with --loop {loop} --http {http}; `pip install uvloop httptools` "
            "for the production-like setup.",
            file=sys.stderr,
        )
    document = recommendation_document(args.items)
    body = orjson.dumps(document)
    sources = source_fingerprint()  # each server imports the code afresh: it must not change meanwhile
    try:
        runs, verified = measure(args, loop, http, body)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(runs)
    if source_fingerprint() != sources:
        summary["warnings"].append("the guardrail sources changed during the run: its runs measured different code")
        print(f"warning: {summary['warnings'][-1]}", file=sys.stderr)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/overhead.py", *sys.argv[1:]]),
        "setup": {
            **vars(args),
            "loop": loop,
            "http": http,
            "body_bytes": len(body),
            "distinct_shapes": distinct_shapes(document),
        },
        "guardrail_sources": sources,
        "machine": machine_info(),
        "verified": verified,
        "summary": summary,
        "runs": [asdict(run) for run in runs],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "overhead.md").write_text(markdown(report))

    def spread(values: dict[str, float], fmt: str = ".1f") -> str:
        return f"(per repeat {values['min']:{fmt}} to {values['max']:{fmt}})"

    bare, guarded = summary["arms"]["bare"]["rps"], summary["arms"]["guarded"]["rps"]
    print(
        f"\nrps bare     {bare['median']:9.1f}  {spread(bare)}\n"
        f"rps guarded  {guarded['median']:9.1f}  {spread(guarded)}\n"
        f"CPU added    {summary['added_us']:9.1f} µs/request  {spread(summary['added_us_per_repeat'])}; "
        f"from /proc {summary['added_cpu_us_from_proc_per_repeat']['median']:.1f}\n"
        f"orjson       {summary['orjson_roundtrip_us_per_repeat']['median']:9.1f} µs (loads + dumps of the body)  "
        f"{spread(summary['orjson_roundtrip_us_per_repeat'])}\n"
        f"ratio        {summary['ratio']:9.2f}  {spread(summary['ratio_per_repeat'], '.2f')}  "
        f"(budget ≤ {BUDGET_RATIO:g}): {summary['verdict']}\n"
        f"orjson in the server {summary['orjson_in_server_us']:.1f} µs/request; "
        f"ratio {summary['ratio_in_server']:.2f}: {summary['verdict_in_server']}\n"
        f"written to {RESULTS / 'overhead.md'} and {RESULTS / 'overhead.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
