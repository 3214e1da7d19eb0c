"""The load generators, neither of them Python: Debian's wrk (closed loop, for maximum throughput)
and wrk2 (open loop at a fixed rate, for latency percentiles), both pinned to the client core.

wrk2 is built from the sources vendored in `benchmarks/wrk2/` on first use, into a cache directory
named after a hash of those sources; missing build tools are installed with apt-get when running as
root, else the error says which packages to install.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import BENCH_DIR, CLIENT_CORE, BenchError, WrkResult, parse_wrk

WRK2_SOURCES = BENCH_DIR / "wrk2" / "src"
CALIBRATION_MS = 2000  # wrk2's built-in 10 s calibration, shortened: the server is warm already
_C_FILES = (
    "wrk.c", "net.c", "ssl.c", "aprintf.c", "stats.c", "script.c", "units.c", "ae.c", "zmalloc.c",
    "http_parser.c", "tinymt64.c", "hdr_histogram.c",
)  # fmt: skip
_CFLAGS = (
    "-std=c99", "-O2", "-D_REENTRANT", "-D_POSIX_C_SOURCE=200809L", "-D_DEFAULT_SOURCE", "-DluaL_reg=luaL_Reg",
    f"-DCALIBRATE_DELAY_MS={CALIBRATION_MS}", "-include", "sys/time.h", "-I/usr/include/luajit-2.1",
)  # fmt: skip
_LIBS = ("-lluajit-5.1", "-lpthread", "-lm", "-lssl", "-lcrypto", "-ldl")
# What the benchmarks run or build with, and the Debian package that brings it.
_NEEDS = {
    "wrk": "wrk",
    "taskset": "util-linux",
    "gcc": "gcc",
    "luajit": "luajit",
    "/usr/include/luajit-2.1/lua.h": "libluajit-5.1-dev",
    "/usr/include/openssl/ssl.h": "libssl-dev",
}
# Each request as the next of N users (bench, bench-1, ..., bench-N-1), so that a store's cache and
# the guardrail's per-user contexts see many users, as in production. N is the script's argument.
USERS_SCRIPT = """\
local users, n = 1, 0
function init(args) users = tonumber(args[1]) end
function request()
  local user = "bench"
  if n > 0 then user = "bench-" .. n end
  n = (n + 1) % users
  return wrk.format(nil, nil, {["x-user-id"] = user})
end
"""


def missing_packages() -> list[str]:
    return sorted(
        {
            package
            for need, package in _NEEDS.items()
            if not (Path(need).exists() if "/" in need else shutil.which(need))
        }
    )


def ensure_tools(*, install: bool = True) -> None:
    """Install what is missing (root with apt-get), or say what to install."""
    missing = missing_packages()
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-qq", *missing]
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} ...", flush=True)
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=environment, capture_output=True)
        done = subprocess.run(command, check=False, env=environment, capture_output=True, text=True)
        if done.returncode == 0 and not missing_packages():
            return
        raise BenchError(f"`{' '.join(command)}` failed:\n{done.stdout}{done.stderr}")
    raise BenchError(f"the benchmarks need {', '.join(missing)}: run `sudo {' '.join(command)}`")


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "guardrail-bench"


def wrk2_binary() -> Path:
    """The wrk2 built from `benchmarks/wrk2/src`, building it (about 10 s) if this version is not cached."""
    digest = hashlib.sha256(" ".join(_CFLAGS + _LIBS).encode())
    for path in sorted(WRK2_SOURCES.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = _cache_dir() / f"wrk2-{digest.hexdigest()[:12]}" / "wrk2"
    if target.is_file():
        return target
    ensure_tools()
    print(f"building wrk2 into {target.parent} ...", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wrk2-build-") as build:
        objects = []
        for name in _C_FILES:
            obj = Path(build) / name.replace(".c", ".o")
            _run(["gcc", *_CFLAGS, "-c", "-o", str(obj), str(WRK2_SOURCES / name)])
            objects.append(str(obj))
        bytecode = Path(build) / "bytecode.o"  # wrk's own Lua half, compiled into the binary
        _run(["luajit", "-b", str(WRK2_SOURCES / "wrk.lua"), str(bytecode)])
        partial = target.with_suffix(".partial")
        _run(["gcc", "-Wl,-E", "-o", str(partial), *objects, str(bytecode), *_LIBS])
        partial.replace(target)  # only a complete binary ever has the cached name
    return target


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"building wrk2 failed: {' '.join(command)}\n{done.stdout}{done.stderr}")


def users_script() -> Path:
    path = _cache_dir() / "users.lua"
    if not path.is_file() or path.read_text() != USERS_SCRIPT:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(USERS_SCRIPT)
    return path


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/recommendations"


def closed_loop(port: int, *, connections: int, seconds: int, users: int, timeout: int = 10) -> WrkResult:
    """Debian's wrk: as many requests as `connections` keep in flight, for `seconds` (whole seconds)."""
    command = [
        "taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s",
        "--latency", "-s", str(users_script()), _url(port), str(users),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    rate: float  # asked for, requests per second
    rps: float  # achieved
    requests: int
    latency_ms: dict[str, float]  # "50", "90", "99", "99.9", "max", measured from each request's scheduled time
    socket_errors: int


def open_loop(port: int, *, rate: float, connections: int, seconds: int, users: int) -> OpenLoopResult:
    """wrk2 at a fixed `rate` for `seconds` after its calibration (CALIBRATION_MS), latency percentiles."""
    total = seconds + -(-CALIBRATION_MS // 1000)
    command = [
        "taskset", "-c", CLIENT_CORE, str(wrk2_binary()), "-t1", f"-c{connections}", f"-d{total}s",
        f"-R{rate:.0f}", "--latency", "-s", str(users_script()), _url(port), str(users),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk2 failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk2(done.stdout, rate)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk2(output: str, rate: float) -> OpenLoopResult:
    """wrk2's --latency report: the HdrHistogram percentiles of the corrected latency."""
    percentiles = {
        match[1].rstrip("0").rstrip("."): float(match[2]) * _UNITS_MS[match[3]]
        for match in re.finditer(r"^\s+([\d.]+)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    }
    maximum = re.search(r"#\[Max\s*=\s*([\d.]+),", output)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    requests = re.search(r"^\s*(\d+) requests in", output, re.M)
    if rps is None or requests is None or "99" not in percentiles:
        raise BenchError(f"cannot read wrk2's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx is not None:
        raise BenchError(f"{non_2xx[1]} responses were not 2xx: the run measured an error path\n{output}")
    if maximum is not None:
        percentiles["max"] = float(maximum[1])  # the histogram's own unit is ms
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return OpenLoopResult(
        rate=rate,
        rps=float(rps[1]),
        requests=int(requests[1]),
        latency_ms={k: percentiles[k] for k in ("50", "90", "99", "99.9", "max") if k in percentiles},
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )
