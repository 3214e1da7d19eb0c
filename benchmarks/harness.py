"""What every benchmark here shares: pinned servers, /proc CPU accounting, noise checks, wrk's output.

One process serves one arm on core 0 (`server`), the load generator runs on core 1; `core_seconds`,
`cpu_seconds` and `children_cpu_seconds` say who used the cores meanwhile, so that a run can say
when other processes took CPU (the machine has two cores and is shared).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
import timeit
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from apps import ITEMS_ENV

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
SERVER_CORE = "0"
CLIENT_CORE = "1"
NOISE_LIMIT = 0.05  # busy share of a core by other processes above which a run is suspect
_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Something that makes the numbers meaningless: said once, and the run stops."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    rps: float
    requests: int
    latency_ms: dict[str, float]  # percentile ("50", "75", "90", "99") -> milliseconds
    socket_errors: int


# -- wrk ----------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise BenchError(f"cannot read the wrk latency {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    requests = re.search(r"^\s*(\d+) requests in", output, re.M)
    if rps is None or requests is None:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx is not None:
        raise BenchError(f"{non_2xx[1]} responses were not 2xx: the run measured an error path\n{output}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    latency = {match[1]: _ms(match[2]) for match in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)}
    return WrkResult(
        rps=float(rps[1]),
        requests=int(requests[1]),
        latency_ms=latency,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


# -- servers ------------------------------------------------------------------------------------


def server_options() -> tuple[str, str]:
    """(loop, http): the fastest uvicorn offers here, the same for both arms."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def core_seconds() -> dict[str, float]:
    """Busy seconds of each core so far (user, nice, system, irq, softirq, steal), from /proc/stat."""
    busy = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, ticks[:8])
            busy[name[3:]] = (user + nice + system + irq + softirq + steal) / _TICKS
    return busy


def wait_for_quiet_cores(limit: float) -> float:
    """Wait (up to `limit` seconds) until cores 0 and 1 are idle for a second: on a shared machine,
    someone's test run on either core would slow one arm only. Returns their busy share at the end."""
    deadline = time.monotonic() + limit
    while True:
        before = core_seconds()
        time.sleep(1)
        after = core_seconds()
        busy = max(after[core] - before[core] for core in (SERVER_CORE, CLIENT_CORE))
        if busy <= NOISE_LIMIT or time.monotonic() >= deadline:
            return busy
        print(f"    waiting for quiet cores ({busy:.0%} busy)", flush=True)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    # Fields 14 and 15 of /proc/PID/stat (after the parenthesised name): utime and stime in ticks.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@contextmanager
def server(
    arm: str, items: int, loop: str, http: str, *, factory: str | None = None, env: Mapping[str, str] | None = None
) -> Iterator[tuple[int, int]]:
    """A uvicorn process serving `arm` on core 0: yields (port, pid) once it answers.
    The app is `apps:make_<arm>` unless `factory` names another function of apps.py; `env` adds
    to the server's environment (see apps.py for what the factories read)."""
    port = free_port()
    command = [
        "taskset", "-c", SERVER_CORE, sys.executable, "-m", "uvicorn", "--factory", f"apps:{factory or 'make_' + arm}",
        "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log", "--loop", loop, "--http", http, "--lifespan", "on",
    ]  # fmt: skip
    environment = {**os.environ, **(env or {}), ITEMS_ENV: str(items)}
    with process_answering(command, f"http://127.0.0.1:{port}/healthz", f"the {arm} server", environment) as pid:
        yield port, pid


@contextmanager
def process_answering(command: list[str], health_url: str, name: str, env: Mapping[str, str]) -> Iterator[int]:
    """Run `command` (from the repository root, able to import `guardrail`) until the block ends:
    yields its pid once `health_url` answers 200. With `taskset` first, the pid is the server's own
    (taskset execs the command)."""
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                stderr = process.stderr.read() if process.stderr else ""
                raise BenchError(f"{name} exited ({process.returncode}):\n{stderr}")
            try:
                with urllib.request.urlopen(health_url, timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not answer {health_url} within 30 s")
            time.sleep(0.05)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


# -- the baseline -------------------------------------------------------------------------------


def orjson_roundtrip_us(body: bytes, *, rounds: int = 7) -> float:
    """Best-of-`rounds` µs of orjson.loads + orjson.dumps of the body, on the servers' core."""
    loads, dumps = orjson.loads, orjson.dumps
    timer = timeit.Timer(lambda: dumps(loads(body)))
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(SERVER_CORE)})
    try:
        number = max(timer.autorange()[0], 2000)
        return min(timer.repeat(repeat=rounds, number=number)) / number * 1e6
    finally:
        os.sched_setaffinity(0, cores)


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def source_fingerprint() -> str:
    """The guardrail code measured: a hash of its sources (the checkout may have no commit to name)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "guardrail").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        wrk = (done.stdout + done.stderr).split(" Copyright")[0].strip() or "unknown"
    except FileNotFoundError:  # only the load-generating benchmarks need it
        wrk = "not installed"
    return {
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip(),
        "arch": subprocess.run(["uname", "-m"], capture_output=True, text=True, check=True).stdout.strip(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk,
        **{name: _version(name) for name in ("uvicorn", "starlette", "orjson", "uvloop", "httptools")},
    }
