"""suite.py's numbers turned into figures: the summary per arm, the markdown report, the two charts.

python benchmarks/suite_report.py benchmarks/results/suite.json   # redo the .md and .png of a run
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from harness import spread
from suite import ARMS, BY_NAME, SCALING_ARMS

BUDGET_RATIO = 3.0  # docs/architecture.md §10: CPU added <= 3 x an orjson loads + dumps of the body
BUDGET_P99_MS = 1.0  # docs/architecture.md §10: p99 added latency at half the bare app's saturation rate
Samples = list[dict[str, Any]]


def _of(samples: Samples, size: int, arm: str, kind: str) -> Samples:
    return sorted(
        (s for s in samples if s["size"] == size and s["arm"] == arm and s["kind"] == kind), key=lambda s: s["repeat"]
    )


def _paired(samples: Samples, size: int, arm: str, kind: str, value: str) -> list[tuple[float, float]]:
    """(arm, bare) values of the same repeat: the two ran within seconds of each other."""
    mine = {s["repeat"]: s for s in _of(samples, size, arm, kind)}
    bare = {s["repeat"]: s for s in _of(samples, size, "bare", kind)}
    return [(_get(mine[r], value), _get(bare[r], value)) for r in sorted(mine.keys() & bare.keys())]


def _get(sample: dict[str, Any], value: str) -> float:
    if value.startswith("p"):
        return float(sample["latency_ms"][value[1:]])
    return float(sample[value])


def _maybe(values: Sequence[float]) -> dict[str, float] | None:
    return spread(values) if values else None


def summarize_size(report: dict[str, Any], size: int, arms: Sequence[str]) -> dict[str, Any]:
    samples: Samples = report["samples"]
    bare_rps = statistics.median(s["rps"] for s in _of(samples, size, "bare", "closed"))
    rows: dict[str, Any] = {}
    for arm in arms:
        closed = _of(samples, size, arm, "closed")
        if not closed:
            continue
        rps = statistics.median(s["rps"] for s in closed)
        added = [(1 / a - 1 / b) * 1e6 for a, b in _paired(samples, size, arm, "closed", "rps")]
        if not added:
            continue  # its runs failed, or the bare app's did
        proc = [a - b for a, b in _paired(samples, size, arm, "closed", "server_cpu_us")]
        opened = _of(samples, size, arm, "open")
        loads = [s["store_loads_per_request"] for s in closed if s["store_loads_per_request"] is not None]
        rows[arm] = {
            "rps": spread([s["rps"] for s in closed]),
            "added_us": (1 / rps - 1 / bare_rps) * 1e6,  # from the medians
            "added_us_per_repeat": spread(added),
            "added_proc_us_per_repeat": spread(proc),
            "server_cpu_us": spread([s["server_cpu_us"] for s in closed]),
            "redis_cpu_us": statistics.median(s["redis_cpu_us"] for s in closed),
            "store_loads_per_request": statistics.median(loads) if loads else None,
            # Responses decided by the fail mode (the store over its 20 ms budget): another code path.
            "degraded_share": (
                sum(s["degraded"] for s in closed) / sum(s["requests"] for s in closed)
                if closed[0]["degraded"] is not None
                else None
            ),
            "p50_ms": _maybe([s["latency_ms"]["50"] for s in opened]),
            "p99_ms": _maybe([s["latency_ms"]["99"] for s in opened]),
            "p99_added_ms": _maybe([a - b for a, b in _paired(samples, size, arm, "open", "p99")]) if opened else None,
            "open_rps": _maybe([s["rps"] for s in opened]),
        }
    orjson = rows["orjson"]
    for arm, row in rows.items():
        row["x_orjson"] = row["added_us"] / orjson["added_us"]
        mine = {s["repeat"]: s["rps"] for s in _of(samples, size, arm, "closed")}
        yardstick = {s["repeat"]: s["rps"] for s in _of(samples, size, "orjson", "closed")}
        bare = {s["repeat"]: s["rps"] for s in _of(samples, size, "bare", "closed")}
        per_repeat = [
            (1 / mine[r] - 1 / bare[r]) / (1 / yardstick[r] - 1 / bare[r])
            for r in sorted(mine.keys() & yardstick.keys() & bare.keys())
        ]
        row["x_orjson_per_repeat"] = _maybe(per_repeat)
    return rows


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least squares y = intercept + slope * x, with R²."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return {"slope": slope, "intercept": intercept, "r2": 1 - residual / total if total else 1.0}


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    plan = report["plan"]
    sizes = {int(size): info for size, info in report["sizes"].items()}
    by_size = {size: summarize_size(report, size, plan["arms"]) for size in plan["sizes"]}
    scaling_rows = {size: summarize_size(report, size, SCALING_ARMS) for size in sorted(plan["scaling"])}
    scaling = {}
    if len(scaling_rows) >= 2:
        for arm in ("guardrail", "orjson"):
            points = [(size, rows[arm]["added_us"]) for size, rows in scaling_rows.items() if arm in rows]
            scaling[arm] = {
                "points": {size: rows[arm] for size, rows in scaling_rows.items() if arm in rows},
                "fit": linear_fit([p[0] for p in points], [p[1] for p in points]),
            }
    return {"by_size": by_size, "scaling": scaling, "sizes": sizes}


# -- markdown -----------------------------------------------------------------------------------


def _cell(value: dict[str, float] | None, fmt: str, headline: float | None = None) -> str:
    if value is None:
        return ""
    middle = value["median"] if headline is None else headline
    return f"{middle:{fmt}} ({value['min']:{fmt}} to {value['max']:{fmt}})"


def _warnings(report: dict[str, Any]) -> list[str]:
    found = list(report.get("warnings", []))
    found += [f"**run failed and left out**: {failure}" for failure in report.get("failures", [])]
    for s in report["samples"]:
        noisy = max(s["others_server_core"], s["others_client_core"]) > 0.05
        problems = []
        if s["socket_errors"]:
            problems.append(f"{s['socket_errors']} socket errors")
        if noisy:
            problems.append(
                f"other processes took {s['others_server_core']:.0%} of core 0 "
                f"and {s['others_client_core']:.0%} of core 1"
            )
        if s["kind"] == "closed" and s["server_cpu_share"] < 0.9:
            problems.append(f"the server used only {s['server_cpu_share']:.0%} of its core")
        if s.get("degraded"):
            problems.append(f"{s['degraded']:.0f} degraded responses")
        if problems:
            found.append(
                f"{s['size']} items, {s['kind']} loop, repeat {s['repeat']}, {s['arm']}: {'; '.join(problems)}"
            )
    return found


def budget_lines(report: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The budget (docs/architecture.md §10), part by part, with this run's numbers (50-item responses)."""
    rows = summary["by_size"].get(50)
    if rows is None or "guardrail" not in rows:
        return ["(no 50-item run with the guardrail arm: the budget is stated for 50 items)"]
    g, o = rows["guardrail"], rows["orjson"]
    in_process = summary["sizes"][50]["orjson_in_process_us"]
    ratio_server, ratio_process = g["x_orjson"], g["added_us"] / in_process
    lines = [
        "| budget (docs/architecture.md §10) | measured | met? |",
        "|---|---|---|",
        f"| CPU added per guarded 50-item response ≤ 3 x an orjson loads + dumps of the body | "
        f"{g['added_us']:.0f} µs added; orjson round trip {o['added_us']:.0f} µs in the server (the orjson arm) "
        f"= **{ratio_server:.2f} x** (per repeat {g['x_orjson_per_repeat']['min']:.2f} to "
        f"{g['x_orjson_per_repeat']['max']:.2f}); {in_process:.0f} µs in process (timeit) = {ratio_process:.2f} x | "
        f"{'yes' if ratio_server <= BUDGET_RATIO else '**no**'} |",
    ]
    warm, miss = rows.get("redis-0"), rows.get("redis-100")
    if warm and miss and warm["store_loads_per_request"] is not None:
        met = warm["store_loads_per_request"] < 0.01 and miss["store_loads_per_request"] <= 1.0
        lines.append(
            "| 0 store round trips per request with a warm cache, at most 1 on a miss | "
            f"{warm['store_loads_per_request']:.3f} per request warm (0% misses; entries expire after 60 s), "
            f'{miss["store_loads_per_request"]:.3f} at 100% misses (`guardrail_store_seconds_count{{op="load"}}`) | '
            f"{'yes' if met else '**no**'} |"
        )
    lines.append(
        "| decision records never awaited | by construction: `store.record()` queues, a background task "
        "writes batches (see redis_store.md for their cost) | not measured here |"
    )
    rate = summary["sizes"][50]["rate"]
    if g["p99_added_ms"] is not None:
        p99 = g["p99_added_ms"]
        lines.append(
            f"| p99 added latency ≤ 1 ms at half the bare app's saturation rate ({rate:.0f} req/s) | "
            f"{p99['median']:.2f} ms (per repeat {p99['min']:.2f} to {p99['max']:.2f}; guardrail p99 "
            f"{g['p99_ms']['median']:.2f} ms, bare {rows['bare']['p99_ms']['median']:.2f} ms) | "
            f"{'yes' if p99['median'] <= BUDGET_P99_MS else '**no**'} |"
        )
    else:
        lines.append(
            f"| p99 added latency ≤ 1 ms at half the bare app's saturation rate ({rate:.0f} req/s) | the guardrail "
            f"saturates at {g['rps']['median']:.0f} req/s, below that rate: its queue grows without bound | **no** |"
        )
    return lines


def markdown(report: dict[str, Any], summary: dict[str, Any], stem: str) -> str:
    plan, machine = report["plan"], report["machine"]
    lines = [
        "# The guardrail against a bare app, a naive middleware and a policy engine",
        "",
        f"`{report['command']}`, {report['date']}, {report['seconds'] / 60:.1f} minutes; guardrail sources "
        f"{report['guardrail_sources']} (sha256 of guardrail/**/*.py, first 12 hex digits).",
        "",
        f"Each arm is one uvicorn process (`--loop {report['server']['loop']} --http {report['server']['http']}`) "
        f"pinned to core 0; the load generator is on core 1: Debian's `wrk -t1` (closed loop, as many "
        f"connections as keep about 5 ms of work queued, 8 to {plan['connections']}: more only queue longer) "
        f"for the maximum throughput, {plan['repeats']} runs of {plan['seconds']} s per arm after a "
        f"{plan['warmup']} s warm-up (and, for the guardrail arms, every user's state loaded into the cache "
        f"before each run); then `wrk2 -t1 -c{plan['connections']} -R<rate>` (open loop, latency from "
        f"each request's scheduled time) at half the bare app's maximum, {plan['repeats']} runs of "
        f"{plan['open_seconds']} s after a 2 s calibration, for the arms whose maximum is at least 1.1 x that "
        f"rate. Requests go to {plan['users']} users in turn (a wrk Lua script). Arms alternate order between "
        "repeats. A redis-server of the run's own (free port) on core 1 serves the Redis arms and the naive arm.",
        "",
        *(
            [
                f"**The upstream spends {work} µs of CPU per request** (`--upstream-work-us {work}`), as a "
                "recommender computing its answer would, so every arm's maximum, and the fixed rate, are lower.",
                "",
            ]
            if (work := report.get("upstream_work_us"))
            else []
        ),
        "Columns: *max req/s* closed loop; *CPU added* = 1/rps - 1/rps of the bare app, per request "
        "(median of the medians; min to max over repeats, each paired with the bare run of the same repeat); "
        "*/proc* = the server process's own CPU time per request, minus the bare app's (a cross-check "
        "less sensitive to other processes); *x orjson* = CPU added / the orjson round trip arm's CPU added; "
        "*p50, p99* at the fixed rate; *p99 added* = minus the bare app's p99 in the same repeat; "
        "*loads/req* = Redis round trips for user state per guarded request (closed loop); *degraded* = share "
        "of the guardrail's responses decided by its fail mode because the store missed its 20 ms budget "
        "(fail closed: a different, cheaper path; non-zero means the machine was too busy for the Redis "
        "figures to mean much); *redis µs* = redis-server's CPU "
        "per request (on core 1, not in the other figures).",
        "",
    ]
    for size, rows in summary["by_size"].items():
        info = summary["sizes"][size]
        lines += [
            f"## {size} items per response",
            "",
            f"Body {info['body_bytes']} bytes, {info['distinct_shapes']} distinct item shapes; the guardrail keeps "
            f"{info['kept']} items and hides {size - (info['kept'] or 0)} for the benchmark user (every deciding "
            f"arm kept the same ids: checked at start-up). Fixed rate for the latencies: **{info['rate']:.0f} req/s**. "
            f"orjson loads + dumps of the body in process: {info['orjson_in_process_us']:.1f} µs.",
            "",
            "| arm | max req/s | CPU added µs/req | /proc µs/req | x orjson | p50 ms | p99 ms | p99 added ms "
            "| loads/req | degraded | redis µs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for arm, row in rows.items():
            over = arm in info["over_capacity"]
            latency = (
                ["over capacity"] * 3 if over else [_cell(row[k], ".2f") for k in ("p50_ms", "p99_ms", "p99_added_ms")]
            )
            loads = "" if row["store_loads_per_request"] is None else f"{row['store_loads_per_request']:.3f}"
            degraded = "" if row["degraded_share"] is None else f"{row['degraded_share']:.1%}"
            lines.append(
                f"| {BY_NAME[arm].label} | {_cell(row['rps'], '.0f')} "
                f"| {_cell(row['added_us_per_repeat'], '.0f', row['added_us']) if arm != 'bare' else ''} "
                f"| {_cell(row['added_proc_us_per_repeat'], '.0f') if arm != 'bare' else ''} "
                f"| {_cell(row['x_orjson_per_repeat'], '.2f', row['x_orjson']) if arm != 'bare' else ''} "
                f"| {' | '.join(latency)} | {loads} | {degraded} | {row['redis_cpu_us']:.0f} |"
            )
        lines.append("")
    if summary["scaling"]:
        g, o = summary["scaling"]["guardrail"], summary["scaling"]["orjson"]
        lines += [
            "## Cost against items per response",
            "",
            "CPU added per request (1/rps - 1/rps of the bare app serving the same body), closed loop.",
            "",
            "| items | guardrail µs/req | per item | orjson round trip µs/req | per item | guardrail / orjson |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for size, row in g["points"].items():
            orow = o["points"][size]
            lines.append(
                f"| {size} | {_cell(row['added_us_per_repeat'], '.0f', row['added_us'])} | "
                f"{row['added_us'] / size:.2f} | {_cell(orow['added_us_per_repeat'], '.0f', orow['added_us'])} | "
                f"{orow['added_us'] / size:.2f} | {row['added_us'] / orow['added_us']:.2f} |"
            )
        gf, of = g["fit"], o["fit"]
        lines += [
            "",
            f"Least-squares line: guardrail **{gf['intercept']:.0f} µs + {gf['slope']:.2f} µs per item** "
            f"(R² {gf['r2']:.3f}); orjson round trip {of['intercept']:.0f} µs + {of['slope']:.2f} µs per item "
            f"(R² {of['r2']:.3f}). ![scaling]({stem}-scaling.png)",
            "",
        ]
    lines += ["## Budget (docs/architecture.md §10)", "", *budget_lines(report, summary), ""]
    warnings = _warnings(report)
    if warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in warnings), ""]
    lines += [
        f"![arms]({stem}.png)",
        "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()) + ".",
        "",
    ]
    return "\n".join(lines)


# -- charts -------------------------------------------------------------------------------------


def arms_chart(summary: dict[str, Any], path: Path) -> None:
    sizes = list(summary["by_size"])
    figure, axes = plt.subplots(len(sizes), 2, figsize=(15, 3.2 * len(sizes) + 0.8), squeeze=False)
    for row_axes, size in zip(axes, sizes, strict=True):
        rows = summary["by_size"][size]
        names = [arm.name for arm in ARMS if arm.name in rows and arm.name != "bare"]
        labels = [BY_NAME[name].label for name in names]
        ax = row_axes[0]
        values = [max(rows[n]["added_us"], 0.1) for n in names]
        low = [max(v - rows[n]["added_us_per_repeat"]["min"], 0) for v, n in zip(values, names, strict=True)]
        high = [max(rows[n]["added_us_per_repeat"]["max"] - v, 0) for v, n in zip(values, names, strict=True)]
        colors = ["#4c72b0" if BY_NAME[n].guardrail else "#999999" for n in names]
        ax.barh(labels, values, xerr=[low, high], color=colors, capsize=3)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("CPU added per request vs the bare app, µs (log scale; min to max over repeats)")
        ax.set_title(f"{size} items: cost per request")
        for y, value in enumerate(values):
            ax.text(value * 1.1, y, f"{value:.0f}", va="center", fontsize=8)
        ax = row_axes[1]
        measured = [n for n in ["bare", *names] if rows[n]["p99_ms"] is not None]
        p50 = [rows[n]["p50_ms"]["median"] for n in measured]
        p99 = [rows[n]["p99_ms"]["median"] for n in measured]
        positions = range(len(measured))
        ax.barh([p - 0.2 for p in positions], p50, height=0.4, label="p50", color="#55a868")
        ax.barh([p + 0.2 for p in positions], p99, height=0.4, label="p99", color="#c44e52")
        ax.set_yticks(list(positions), [BY_NAME[n].label for n in measured])
        ax.invert_yaxis()
        rate = summary["sizes"][size]["rate"]
        ax.set_xlabel("ms, open loop (arms that cannot take the rate are left out)")
        ax.set_title(f"{size} items: p50, p99 at {rate:.0f} req/s (half the bare max)")
        ax.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def scaling_chart(summary: dict[str, Any], path: Path) -> None:
    figure, ax = plt.subplots(figsize=(7.5, 4.8))
    for arm, color, label in (("guardrail", "#4c72b0", "guardrail (memory store)"), ("orjson", "#999999", "orjson")):
        data = summary["scaling"][arm]
        sizes = list(data["points"])
        values = [data["points"][s]["added_us"] for s in sizes]
        low = [max(v - data["points"][s]["added_us_per_repeat"]["min"], 0) for v, s in zip(values, sizes, strict=True)]
        high = [max(data["points"][s]["added_us_per_repeat"]["max"] - v, 0) for v, s in zip(values, sizes, strict=True)]
        ax.errorbar(sizes, values, yerr=[low, high], fmt="o", color=color, capsize=3, label=f"{label}, measured")
        fit = data["fit"]
        xs = [min(sizes), max(sizes)]
        ax.plot(
            xs,
            [fit["intercept"] + fit["slope"] * x for x in xs],
            color=color,
            linestyle="--",
            label=f"{fit['intercept']:.0f} µs + {fit['slope']:.2f} µs/item (R² {fit['r2']:.3f})",
        )
    ax.set_xlabel("items per response")
    ax.set_ylabel("CPU added per request vs the bare app, µs")
    ax.set_title("Cost against items per response")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    summary = summarize(report)
    report["summary"] = summary
    written = [directory / f"{stem}.md", directory / f"{stem}.png"]
    written[0].write_text(markdown(report, summary, stem))
    arms_chart(summary, written[1])
    if summary["scaling"]:
        written.append(directory / f"{stem}-scaling.png")
        scaling_chart(summary, written[-1])
    return written


if __name__ == "__main__":
    source = Path(sys.argv[1])
    for path in write_report(json.loads(source.read_text()), source.parent, source.stem):
        print(f"wrote {path}")
