"""Where the guarded arm's CPU goes in the real server: py-spy on uvicorn while wrk loads it.

    python benchmarks/profile_server.py [--items 50] [--duration 10] [--rate 1000] [--connections 32]

The guarded arm of `overhead.py` (uvicorn pinned to core 0, the memory store warm, a 50-item body)
under `wrk` on core 1, as in that benchmark. Once the server has answered a real decision and had a
warm-up, py-spy samples it twice, one record after the other while the same wrk run goes on (py-spy
writes one format per record): `--format raw` (collapsed stacks, which this script reads) and then
`--format flamegraph` for a picture. py-spy runs on core 1 too, so that it takes no CPU from the server.

py-spy samples with `--nonblocking`: it reads the server's memory without stopping it, so the server
runs at its own speed (the report gives wrk's rate in the warm-up and while profiled). Stopping it
for each sample, py-spy's default (`--blocking` here), takes about 0.5 ms a sample: at 1,000 samples
a second the server loses half its core and serves at half its rate, and even at `--rate 100` it
loses 6 to 14%. The price of not stopping it: 3 to 4% of the reads fail (a stack read while it
changes) and are dropped. On the same server the two ways agree on the order of the parts but not on
every share: three alternating pairs of runs gave the per-item loop 31% non-blocking at 1,000 Hz and
22 to 27% blocking at 100 Hz, the event loop 19% against 22 to 24%, orjson loads 12 to 13% both; read
shares to within a few points. No `--native` either: unwinding C stacks at that rate falls seconds
behind. So C code without a Python frame (orjson, uvloop, httptools, freeing objects) counts on the
Python line that called it; the report names orjson's by reading that line.

Results: benchmarks/results/profile_server.md (shares of the samples by bucket and by function),
benchmarks/results/profile_server.svg (the flame graph) and benchmarks/results/profile_server.collapsed
(py-spy's raw stacks, not in git).
"""

from __future__ import annotations

import argparse
import linecache
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apps import recommendation_body
from harness import (
    BENCH_DIR,
    CLIENT_CORE,
    RESULTS,
    ROOT,
    SERVER_CORE,
    BenchError,
    children_cpu_seconds,
    core_seconds,
    cpu_seconds,
    machine_info,
    parse_wrk,
    server,
    server_options,
    source_fingerprint,
    wait_for_quiet_cores,
)
from overhead import run_wrk, verify, wrk_command

COLLAPSED = RESULTS / "profile_server.collapsed"
SVG = RESULTS / "profile_server.svg"
REPORT = RESULTS / "profile_server.md"
TOP = 25

# -- reading py-spy's collapsed stacks ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    file: str  # as py-spy writes it: the package part of the path (guardrail/engine/loop.py), or a library
    line: int | None

    @property
    def python(self) -> bool:
        """A Python frame, rather than C (which only `py-spy --native` shows)."""
        return self.file.endswith(".py") or self.file.startswith("<")

    @property
    def name(self) -> str:
        return f"{self.function} ({self.file})"


def parse_frame(text: str) -> Frame:
    """`function (file:line)`, `function (file)` or a C frame such as `write (libc.so.6)`."""
    function, sep, where = text.rpartition(" (")
    if not sep or not where.endswith(")"):
        return Frame(text, "", None)
    where = where[:-1]
    file, colon, line = where.rpartition(":")
    if colon and line.isdigit():
        return Frame(function, file, int(line))
    return Frame(function, where, None)


Stack = tuple[Frame, ...]  # outermost first, as py-spy writes them


def read_collapsed(text: str) -> list[tuple[Stack, int]]:
    """py-spy's `--format raw` output: one `frame;frame;...;frame COUNT` line per distinct stack.
    The `process ...` and `thread ...` frames that `--subprocesses` and `--threads` add are left out."""
    stacks = []
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        parsed = tuple(
            parse_frame(frame) for frame in frames.split(";") if not frame.startswith(("process ", "thread "))
        )
        stacks.append((parsed, int(count)))
    return stacks


# -- buckets --------------------------------------------------------------------------------------

ORJSON_LOADS = "orjson loads"
ORJSON_DUMPS = "orjson dumps"
ORJSON_BOTH = "orjson loads and dumps on one line"
ITEMS = "guardrail per-item loop (guardrail/engine/loop.py: check_items)"
ENGINE = "decision engine (guardrail/engine)"
EXPLAIN = "explanation and notice (guardrail/explain)"
METRICS = "metrics (prometheus_client, guardrail/metrics.py)"
STORE = "store (guardrail/store)"
GUARDRAIL = "guardrail middleware, responder and the rest (self time)"
STARLETTE = "Starlette (and the benchmark's endpoint, apps.py)"
SERVER = "uvicorn, httptools, asyncio/uvloop event loop"
OTHER = "other"
BUCKETS = (
    ORJSON_LOADS,
    ORJSON_DUMPS,
    ORJSON_BOTH,
    ITEMS,
    ENGINE,
    EXPLAIN,
    METRICS,
    STORE,
    GUARDRAIL,
    STARLETTE,
    SERVER,
    OTHER,
)

# (bucket, path fragments): the first bucket with a fragment in "/" + the frame's file decides.
_BY_FILE: tuple[tuple[str, tuple[str, ...]], ...] = (
    (ITEMS, ("/guardrail/engine/loop.py",)),
    (ENGINE, ("/guardrail/engine/",)),
    (EXPLAIN, ("/guardrail/explain/",)),
    (METRICS, ("/guardrail/metrics.py", "/prometheus_client/")),
    (STORE, ("/guardrail/store/",)),
    (GUARDRAIL, ("/guardrail/",)),
    (STARLETTE, ("/starlette/", "/apps.py")),
    (SERVER, ("/uvicorn/", "/httptools/", "/asyncio/", "/uvloop/", "/selectors.py")),
)
_LOADS = re.compile(r"loads\(")
_DUMPS = re.compile(r"dumps\(")


def _orjson_call(code: str) -> str | None:
    loads, dumps = _LOADS.search(code) is not None, _DUMPS.search(code) is not None
    if loads and dumps:
        return ORJSON_BOTH
    return ORJSON_LOADS if loads else ORJSON_DUMPS if dumps else None


def _by_file(frame: Frame) -> str | None:
    path = "/" + frame.file
    for bucket, fragments in _BY_FILE:
        if any(fragment in path for fragment in fragments):
            return bucket
    return None


def bucket_of(stack: Stack, source: Callable[[Frame], str]) -> str:
    """The bucket of the innermost frame that has one, so that every sample counts once.

    orjson has no Python frame: its time counts on the line that calls it, the innermost Python
    frame (with `py-spy --native`, orjson's C frames sit below that one), so that frame's line of
    code, from `source`, says loads or dumps. C frames of no known library defer to their caller."""
    innermost = next((index for index in range(len(stack) - 1, -1, -1) if stack[index].python), None)
    for index in range(len(stack) - 1, -1, -1):
        frame = stack[index]
        if not frame.python:
            if "uvloop" in frame.file or "httptools" in frame.file:
                return SERVER
            continue
        if index == innermost:
            call = _orjson_call(source(frame))
            if call is not None:
                return call
        bucket = _by_file(frame)
        if bucket is not None:
            return bucket
    return OTHER


def source_line(frame: Frame) -> str:
    """The code at the frame's line, found the way the server imported it: py-spy names files by their
    package part (guardrail/engine/loop.py), so look under the repository, benchmarks/ and sys.path."""
    if frame.line is None:
        return ""
    for base in (ROOT, BENCH_DIR, *map(Path, filter(None, sys.path))):
        path = base / frame.file
        if path.is_file():
            return linecache.getline(str(path), frame.line).strip()
    return ""


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    buckets: dict[str, int]  # every bucket of BUCKETS, in that order
    functions: Counter[str]  # self samples by leaf function
    lines: Counter[Frame]  # self samples by leaf line


def analyse(stacks: Iterable[tuple[Stack, int]], source: Callable[[Frame], str] = source_line) -> Profile:
    buckets = dict.fromkeys(BUCKETS, 0)
    functions: Counter[str] = Counter()
    lines: Counter[Frame] = Counter()
    for stack, count in stacks:
        if not stack:
            continue
        buckets[bucket_of(stack, source)] += count
        leaf = stack[-1]
        functions[leaf.name] += count
        lines[leaf] += count
    return Profile(sum(buckets.values()), buckets, functions, lines)


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recording:
    samples: int
    errors: int
    server_cpu_share: float  # of its core, while py-spy recorded the raw stacks
    others_server_core: float
    others_client_core: float  # besides wrk and py-spy


def sampling(args: argparse.Namespace) -> list[str]:
    """How py-spy samples: the options both records share."""
    return ["--rate", str(args.rate), "--duration", str(args.duration), *([] if args.blocking else ["--nonblocking"])]


def py_spy(pid: int, args: argparse.Namespace, fmt: str, output: Path, *extra: str) -> tuple[int, int]:
    """One `py-spy record` of the server, on the client's core: (samples, errors) as it reports them."""
    command = [
        "taskset", "-c", CLIENT_CORE, "py-spy", "record", "--pid", str(pid), *sampling(args),
        "--format", fmt, "--output", str(output), *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    said = done.stdout + done.stderr
    counts = re.search(r"Samples: (\d+) Errors: (\d+)", said)
    if done.returncode != 0 or counts is None:
        raise BenchError(f"py-spy failed ({done.returncode}): {shlex.join(command)}\n{said}")
    return int(counts[1]), int(counts[2])


def record(args: argparse.Namespace, pid: int) -> Recording:
    """The raw record, with the same accounting as overhead.py: who used cores 0 and 1 meanwhile."""
    cores, client_cpu = core_seconds(), children_cpu_seconds()
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    samples, errors = py_spy(pid, args, "raw", COLLAPSED)
    cpu, wall = cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
    client_cpu = children_cpu_seconds() - client_cpu  # py-spy, the only child reaped meanwhile
    cores = {core: busy - cores[core] for core, busy in core_seconds().items()}
    # wrk is still running, so its CPU is not in children_cpu_seconds yet: "others" on the client's
    # core includes wrk, which takes a steady share there.
    return Recording(
        samples,
        errors,
        server_cpu_share=cpu / wall,
        others_server_core=max(0.0, (cores[SERVER_CORE] - cpu) / wall),
        others_client_core=max(0.0, (cores[CLIENT_CORE] - client_cpu) / wall),
    )


def markdown(
    args: argparse.Namespace,
    profile: Profile,
    recording: Recording,
    setup: Mapping[str, str],
    machine: Mapping[str, str],
    source: Callable[[Frame], str] = source_line,
) -> str:
    total = profile.samples

    def share(count: int) -> str:
        return f"{count / total:.1%}"

    bucket_rows = [
        f"| {bucket} | {count} | {share(count)} |"
        for bucket, count in profile.buckets.items()
        if count or bucket != ORJSON_BOTH
    ]
    function_rows = []
    for name, count in profile.functions.most_common(TOP):
        line, in_line = max(
            ((frame, n) for frame, n in profile.lines.items() if frame.name == name), key=lambda pair: pair[1]
        )
        code = source(line).replace("|", "\\|").replace("`", "'")
        where = f"{line.line}: `{code}`" if code else "" if line.line is None else str(line.line)
        function_rows.append(f"| {share(count)} | `{name}` | {where} ({in_line / count:.0%}) |")
    lines = [
        "# The guarded arm in the server, profiled with py-spy",
        "",
        f"Run {setup['date']} with `{setup['command']}`, on guardrail sources {setup['sources']} "
        "(sha256 of guardrail/**/*.py, first 12 hex digits).",
        "",
        f"{args.items} items ({setup['body_bytes']} bytes); uvicorn `--loop {setup['loop']} --http {setup['http']}`, "
        f"one process on core {SERVER_CORE}, the memory store warm; `wrk -t1 -c{args.connections}` on core "
        f"{CLIENT_CORE} with py-spy. `py-spy record {shlex.join(sampling(args))}` "
        f"twice in a row under the same wrk run: `--format raw` (read here) and `--format flamegraph` "
        f"([profile_server.svg](profile_server.svg)).",
        "",
        f"wrk: {setup['warmup_rps']} req/s in the {args.warmup} s warm-up without py-spy, {setup['profiled_rps']} "
        f"req/s over both records. While the raw stacks were recorded the server used "
        f"{recording.server_cpu_share:.0%} of core {SERVER_CORE}; other processes took "
        f"{recording.others_server_core:.0%} of core {SERVER_CORE} and {recording.others_client_core:.0%} "
        f"of core {CLIENT_CORE} (wrk included). py-spy took {recording.samples} samples and failed to read "
        f"{recording.errors} more (a stack read while it changed); the {total} in which the server was busy "
        "are below.",
        "",
        "## By part",
        "",
        "Each sample counts once, for the innermost frame of its stack that belongs to a part: time in "
        "Starlette called from the middleware is Starlette's, time in the engine called from the item "
        "loop is the engine's. orjson's C code has no frame of its own: a sample whose innermost Python "
        "frame is a line calling `loads(` or `dumps(` counts as orjson's. Freeing what orjson.loads "
        "built, and writing to the socket, show up in the Python frames that drop the objects or call "
        "the transport. Shares move by a few points between runs and between py-spy's blocking and "
        "non-blocking sampling (the script's docstring says how much); the order of the parts holds.",
        "",
        f"| part | samples | share of {total} |",
        "|---|---:|---:|",
        *bucket_rows,
        "",
        f"## Top {TOP} functions by self time",
        "",
        "The innermost frame of each sample (a Python one, without `--native`), with its hottest line and "
        "that line's share of the function's samples.",
        "",
        "| share | function (file) | hottest line |",
        "|---:|---|---|",
        *function_rows,
        "",
        *([f"**Warning**: {setup['warning']}.", ""] if "warning" in setup else []),
        "Machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50, help="items per response (default 50)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each py-spy record (default 10)")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second (default 1000)")
    parser.add_argument(
        "--blocking", action="store_true", help="let py-spy stop the server for each sample (see above)"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk before py-spy starts (default 2)")
    parser.add_argument(
        "--quiet-wait", type=float, default=120, help="seconds to wait for quiet cores 0 and 1 (default 120)"
    )
    args = parser.parse_args(argv)

    missing = [tool for tool in ("py-spy", "wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        print(f"profile_server.py needs {', '.join(missing)}: pip install py-spy, apt-get install wrk", file=sys.stderr)
        return 2

    loop, http = server_options()
    sources = source_fingerprint()
    RESULTS.mkdir(exist_ok=True)
    try:
        with server("guarded", args.items, loop, http) as (port, pid):
            verify("guarded", port, args.items)
            wait_for_quiet_cores(args.quiet_wait)
            warmup = run_wrk(port, args.connections, args.warmup)
            # One wrk run under both records, with a second of slack at each end.
            load = subprocess.Popen(
                wrk_command(port, args.connections, 2 * args.duration + 2),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                time.sleep(1)
                recording = record(args, pid)
                py_spy(pid, args, "flamegraph", SVG, "--nolineno")
            finally:
                output, _ = load.communicate()
            if load.returncode != 0:
                raise BenchError(f"wrk failed ({load.returncode}):\n{output}")
            profiled = parse_wrk(output)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    profile = analyse(read_collapsed(COLLAPSED.read_text()))
    if not profile.samples:
        print(f"error: py-spy recorded no stacks of the server in {COLLAPSED}", file=sys.stderr)
        return 1
    setup = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/profile_server.py", *sys.argv[1:]]),
        "sources": sources,
        "body_bytes": str(len(recommendation_body(args.items))),
        "loop": loop,
        "http": http,
        "warmup_rps": f"{warmup.rps:,.0f}",
        "profiled_rps": f"{profiled.rps:,.0f}",
    }
    if source_fingerprint() != sources:
        setup["warning"] = "the guardrail sources changed during the run: the lines quoted may not be the ones run"
        print(f"warning: {setup['warning']}", file=sys.stderr)
    REPORT.write_text(markdown(args, profile, recording, setup, machine_info()))
    for bucket, count in profile.buckets.items():
        print(f"{count / profile.samples:6.1%}  {bucket}")
    print(f"written to {REPORT}, {SVG} and {COLLAPSED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
