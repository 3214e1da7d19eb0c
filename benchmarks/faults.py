"""Faults under load: the sidecar with 2 workers over a real Redis and a real upstream, while things break.

    python benchmarks/faults.py            # about 60 s of load; the report goes to benchmarks/results/faults.md
    python benchmarks/faults.py --short    # about 30 s, as CI runs it (tests/test_faults.py)

Everything runs on loopback: a `redis-server` of its own (append-only file, fsync always, so an
acknowledged change survives a kill), the upstream of `fault_upstream.py` (uvicorn), and
`guardrail serve --workers 2` on the demo policy with `fail_mode: closed`. A fixed-rate client sends
guarded requests for many users of five kinds (consented, never asked, muted "sports", minor, GPC),
and a writer mutes "sports" for one more user after another, throughout. Meanwhile, one after the
other: Redis hangs (SIGSTOP), Redis is killed and restarted, a guardrail worker is killed, a broken
then a good policy is sent with SIGHUP, the upstream turns slow, then down.

Every response is checked against the ground truth of its user's state:
- no personalized item for a user whose consent could not be verified (never asked, a minor, or the
  store down: `Guardrail-Degraded`), no shared-data item under GPC, no muted topic once a mute is
  acknowledged (plus the 100 ms propagation of docs/architecture.md §6);
- no status but 200, except 502 while the upstream is down and 504 while it is slow, and requests
  cut when their worker is killed;
- no request held longer than the store budget + the upstream's own time + 50 ms;
- recovery (the last response still marked by a fault) within 2 s of the fault's end;
- every change acknowledged with 2xx is there at the end; every refused one got 503 with Retry-After.
The run exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for tests.store.redis_servers (after site-packages: an installed guardrail wins)

import httpx  # noqa: E402
import orjson  # noqa: E402
from fault_upstream import PERSONAL  # noqa: E402

from guardrail.policy.loading import load_policy  # noqa: E402
from guardrail.sidecar.errors import UpstreamError  # noqa: E402
from guardrail.sidecar.http1 import ConnectionPool, Timeout  # noqa: E402
from tests.store.redis_servers import RedisServer, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
POLICY = ROOT / "config" / "guardrail.yaml"
HOST = "127.0.0.1"
KINDS = ("consented", "never_asked", "muted", "minor", "gpc")
RECOVERY_LIMIT = 2.0  # seconds after a fault ends
SLACK = 0.05  # seconds a request may be held beyond the store budget and the upstream's own time
PROPAGATION = 0.1  # docs/architecture.md §6: a change is visible everywhere within 100 ms
UPSTREAM_TIMEOUT = 1.0  # GUARDRAIL_UPSTREAM_TIMEOUT for this run: the slow fault goes past it
SHARED_DATA = {item_id for item_id, _, signals in PERSONAL if "third_party" in signals}


@dataclass
class Fault:
    name: str
    start: float  # seconds since the load began
    end: float
    marks: tuple[str, ...]  # what a response shows while this fault lasts: degraded, 502, 504, cut
    notes: list[str] = field(default_factory=list)
    after: list[float] = field(default_factory=list)  # start times of marked requests at or after `end`

    def recovery(self) -> tuple[float, int]:
        """(seconds from the end until the last pair of marked responses within 0.5 s of each other,
        marked responses after that: lone ones, such as one store call over its budget)."""
        times = sorted(self.after)
        recovered = self.end
        for first, second in pairwise(times):
            if second - first <= 0.5:
                recovered = second
        return recovered - self.end, sum(1 for t in times if t > recovered)


@dataclass
class Result:
    user: str
    kind: str
    started: float
    latency: float
    status: int | None  # None: the connection was cut
    degraded: bool = False
    upstream: float = 0.0
    kept: list[dict[str, Any]] = field(default_factory=list)
    policy: str | None = None
    retry_after: bool = False


# -- the processes --------------------------------------------------------------------------------


class Process:
    def __init__(self, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = list(args), env, log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
            )

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(15)
        self.kill()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def workers(pid: int) -> list[int]:
    """The uvicorn workers under `guardrail serve` (not multiprocessing's resource tracker)."""
    result = []
    for child in children(pid):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" not in command:
                result.append(child)
    return result


async def wait_until(url: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < end:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {deadline:g} s")


@contextlib.contextmanager
def environment(workdir: Path) -> Iterator[tuple[RedisServer, Process, Process, Path, str, str]]:
    redis = RedisServer(directory=workdir / "redis", extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    redis.start()
    upstream_port, sidecar_port = free_port(), free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDRAIL_", "PROMETHEUS_"))}
    upstream = Process(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "--factory", "fault_upstream:make_app",
         "--host", HOST, "--port", str(upstream_port), "--log-level", "warning"],
        base_env,
        workdir / "upstream.log",
    )  # fmt: skip
    policy_path = workdir / "guardrail.yaml"
    policy_path.write_text(POLICY.read_text())
    sidecar = Process(
        [sys.executable, "-m", "guardrail.cli", "serve", "--config", str(policy_path), "--workers", "2",
         "--host", HOST, "--port", str(sidecar_port), "--upstream", f"http://{HOST}:{upstream_port}",
         "--log-level", os.environ.get("FAULTS_LOG_LEVEL", "warning")],
        {**base_env, "GUARDRAIL_STORE": redis.url, "GUARDRAIL_UPSTREAM_TIMEOUT": str(UPSTREAM_TIMEOUT)},
        workdir / "sidecar.log",
    )  # fmt: skip
    try:
        upstream.start()
        sidecar.start()
        yield redis, upstream, sidecar, policy_path, f"http://{HOST}:{upstream_port}", f"http://{HOST}:{sidecar_port}"
    finally:
        sidecar.stop()
        upstream.stop()
        redis.stop()


# -- the client -----------------------------------------------------------------------------------


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content)


class Client:
    """The load's HTTP client: the sidecar's own keep-alive pool (`guardrail.sidecar.http1`). With httpx the
    client itself fell seconds behind once a few hundred requests were in flight (its pool scans every
    connection on each request), and its queueing showed as time the sidecar held requests."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        assert parts.hostname is not None
        assert parts.port is not None
        self.base = base
        self.host = parts.netloc.encode()
        self.pool = ConnectionPool(
            parts.hostname, parts.port, timeout=Timeout(10.0), max_connections=1024, max_idle=1024
        )

    async def _send(self, method: bytes, url: str, headers: dict[str, str], body: bytes | None) -> Answer:
        assert url.startswith(self.base)
        head = [(b"host", self.host), *((k.encode(), v.encode()) for k, v in headers.items())]
        content: Any = None
        if body is not None:
            head.append((b"content-length", str(len(body)).encode()))

            async def content() -> Any:
                yield body

            content = content()
        response = await self.pool.request(method, url[len(self.base) :].encode(), head, content)
        try:
            pieces = [piece async for piece in response]
        finally:
            await response.aclose()
        named = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}
        return Answer(response.status, named, b"".join(pieces))

    async def get(self, url: str, *, headers: dict[str, str]) -> Answer:
        return await self._send(b"GET", url, headers, None)

    async def patch(self, url: str, *, content: bytes, headers: dict[str, str]) -> Answer:
        return await self._send(b"PATCH", url, headers, content)

    async def aclose(self) -> None:
        await self.pool.aclose()


# -- the run --------------------------------------------------------------------------------------


def user_kind(index: int) -> str:
    return KINDS[index % len(KINDS)]


def headers_for(user: str, kind: str) -> dict[str, str]:
    headers = {"x-user-id": user}
    if kind == "minor":
        headers["x-user-age"] = "15"
    if kind == "gpc":
        headers["sec-gpc"] = "1"
    return headers


GRANT = {"consent": {"personalization": "granted", "ads_sharing": "granted"}}
MUTE = {"muted": {"sports": {"until": None}}}


class Run:
    def __init__(self, sidecar: str, users: int, rate: float, duration: float, budget: float) -> None:
        self.sidecar, self.users, self.rate, self.duration, self.budget = sidecar, users, rate, duration, budget
        self.results: list[Result] = []
        self.acked: dict[str, float] = {}  # writer user -> when the mute was acknowledged
        self.refused: list[tuple[int, bool]] = []  # (status, had Retry-After)
        self.other_changes: list[str] = []
        self.cut_changes: list[float] = []  # when a change's connection was cut (a worker killed under it)
        self.readers: set[asyncio.Task[None]] = set()
        self.good_policy_at = float("inf")
        self.stalls: list[tuple[float, float]] = []  # (when, seconds) this client's loop stalled
        self.t0 = 0.0
        self.client = Client(sidecar)
        # The writer's changes must not queue behind the readers' requests in one client pool.
        self.writer_client = Client(sidecar)

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def setup(self) -> None:
        for index in range(self.users):
            kind = user_kind(index)
            if kind == "never_asked":
                continue
            patch: dict[str, Any] = dict(GRANT)
            if kind == "muted":
                patch |= MUTE
            response = await self.client.patch(
                f"{self.sidecar}/guardrail/v1/controls",
                content=orjson.dumps(patch),
                headers={"x-user-id": f"u{index}", "content-type": "application/merge-patch+json"},
            )
            if response.status_code != 200:
                raise RuntimeError(f"setting up u{index}: {response.status_code} {response.content[:200]!r}")

    async def watch_own_loop(self) -> None:
        """When this client's own event loop stalled (forking a Redis server, a GC pass): a request in
        flight then looks held though the sidecar answered in time."""
        while self.now() < self.duration + 1:
            before = self.now()
            await asyncio.sleep(0.005)
            lag = self.now() - before - 0.005
            if lag > 0.02:
                self.stalls.append((before + 0.005, lag))  # the loop was not running from then on

    async def warm_up(self) -> None:
        """One request per user before the clock starts (not checked): every worker connects to
        Redis and the upstream, and caches some states, as a replica in service has."""
        gate = asyncio.Semaphore(16)

        async def one(index: int) -> None:
            async with gate:
                user, kind = f"u{index}", user_kind(index)
                with contextlib.suppress(UpstreamError):
                    await self.client.get(f"{self.sidecar}/recommendations", headers=headers_for(user, kind))

        # Twice over: each pass reaches a user through either worker, so most users are known to both.
        for _ in range(2):
            await asyncio.gather(*(one(index) for index in range(self.users)))

    async def one(self, index: int) -> None:
        user, kind = f"u{index}", user_kind(index)
        started = self.now()
        try:
            response = await self.client.get(f"{self.sidecar}/recommendations", headers=headers_for(user, kind))
        except UpstreamError:
            self.results.append(Result(user, kind, started, self.now() - started, None))
            return
        result = Result(
            user,
            kind,
            started,
            self.now() - started,
            response.status_code,
            degraded=response.headers.get("guardrail-degraded") == "1",
            upstream=float(response.headers.get("x-upstream-seconds", "0")),
        )
        if response.status_code == 200:
            body = orjson.loads(response.content)
            result.kept = body.get("items", [])
            result.policy = body.get("guardrail", {}).get("policy")
        self.results.append(result)

    async def load(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        sent = 0
        while (elapsed := self.now()) < self.duration:
            due = int(elapsed * self.rate)
            while sent < due:  # open loop: requests go out on schedule, whatever is still in flight
                task = asyncio.create_task(self.one(sent % self.users))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)

    async def writer(self, every: float) -> None:
        index = 0
        while self.now() < self.duration:
            user = f"w{index}"
            index += 1
            try:
                response = await self.writer_client.patch(
                    f"{self.sidecar}/guardrail/v1/controls",
                    content=orjson.dumps(GRANT | MUTE),
                    headers={"x-user-id": user, "content-type": "application/merge-patch+json"},
                )
            except UpstreamError:
                self.cut_changes.append(self.now())  # outcome unknown to the client, as with any cut
            else:
                if 200 <= response.status_code < 300:
                    self.acked[user] = self.now()
                elif response.status_code == 503:
                    self.refused.append((503, "retry-after" in response.headers))
                else:
                    self.other_changes.append(f"{user}: {response.status_code}")
            # Readers for the writer's users too: a mute, once acknowledged, must hold.
            reader = asyncio.create_task(self.one_writer_user(user))
            self.readers.add(reader)
            reader.add_done_callback(self.readers.discard)
            await asyncio.sleep(every)

    async def one_writer_user(self, user: str) -> None:
        for _ in range(3):
            await asyncio.sleep(0.3)
            started = self.now()
            with contextlib.suppress(UpstreamError):
                response = await self.client.get(f"{self.sidecar}/recommendations", headers={"x-user-id": user})
                result = Result(user, "writer", started, self.now() - started, response.status_code)
                result.degraded = response.headers.get("guardrail-degraded") == "1"
                if response.status_code == 200:
                    result.kept = orjson.loads(response.content).get("items", [])
                self.results.append(result)

    async def final_changes(self) -> list[str]:
        """Acknowledged changes missing at the end."""
        missing = []
        for user in self.acked:
            response = await self.client.get(f"{self.sidecar}/guardrail/v1/controls", headers={"x-user-id": user})
            if response.status_code != 200 or "sports" not in response.json().get("muted", {}):
                missing.append(user)
        return missing


async def inject(
    faults: list[Fault],
    redis: RedisServer,
    upstream: Any,
    sidecar: Any,
    policy_path: Path,
    upstream_url: str,
    run: Run,
) -> None:
    good_text = await asyncio.to_thread(policy_path.read_text)
    for fault in faults:
        await asyncio.sleep(max(0.0, fault.start - run.now()))
        if fault.name == "redis hangs (SIGSTOP)":
            redis.pause()
            await asyncio.sleep(fault.end - run.now())
            redis.resume()
        elif fault.name == "redis killed, restarted":
            redis.kill()
            await asyncio.sleep(fault.end - run.now())
            await asyncio.to_thread(redis.restart)
        elif fault.name == "a guardrail worker killed":
            victims = workers(sidecar.popen.pid)
            fault.notes.append(f"{len(victims)} workers before")
            if victims:
                os.kill(victims[0], signal.SIGKILL)
            await asyncio.sleep(fault.end - run.now())
            fault.notes.append(f"{len(workers(sidecar.popen.pid))} workers after")
        elif fault.name == "broken policy, then a good one (SIGHUP)":
            await asyncio.to_thread(policy_path.write_text, good_text.replace("fail_mode: closed", "fail_mode: x"))
            sidecar.popen.send_signal(signal.SIGHUP)
            await asyncio.sleep((fault.end - fault.start) / 2)
            await asyncio.to_thread(policy_path.write_text, good_text.replace("demo-2026-11", "demo-2026-11-b"))
            sidecar.popen.send_signal(signal.SIGHUP)
            run.good_policy_at = run.now()
            fault.notes.append(f"good policy sent at {run.good_policy_at:.1f} s")
            await asyncio.sleep(max(0.0, fault.end - run.now()))
        elif fault.name == "upstream slow":
            async with httpx.AsyncClient() as client:
                await client.post(f"{upstream_url}/_control", params={"delay": str(UPSTREAM_TIMEOUT + 1)})
                await asyncio.sleep(fault.end - run.now())
                await client.post(f"{upstream_url}/_control", params={"delay": "0"})
        elif fault.name == "upstream down":
            upstream.kill()
            await asyncio.sleep(fault.end - run.now())
            upstream.start()


def timeline(duration: float) -> list[Fault]:
    """Six faults, one after the other, each given time to recover before the next."""
    step = duration / 7
    names = [
        ("redis hangs (SIGSTOP)", ("degraded",)),
        ("redis killed, restarted", ("degraded",)),
        ("a guardrail worker killed", ("cut", "degraded")),  # its replacement starts with no connections
        ("broken policy, then a good one (SIGHUP)", ()),
        ("upstream slow", ("504",)),
        ("upstream down", ("502",)),
    ]
    return [
        Fault(name, start=step * (i + 0.6), end=step * (i + 0.6) + min(3.0, step * 0.45), marks=marks)
        for i, (name, marks) in enumerate(names)
    ]


# -- the checks -----------------------------------------------------------------------------------


def is_sports(item: dict[str, Any]) -> bool:
    return any(c == "sports" or c.startswith("sports.") for c in item.get("categories", []))


def check(run: Run, faults: list[Fault], missing: list[str]) -> tuple[list[str], list[str], dict[str, Any]]:
    """(safety problems, timing problems, figures). Safety: what a user was shown and what was kept.
    Timing: recovery, time held, and responses served closed because a store call ran over budget."""
    problems: list[str] = []
    slow: list[str] = []
    in_window: dict[str, list[Fault]] = {"502": [], "504": [], "cut": [], "degraded": []}
    for fault in faults:
        for mark in fault.marks:
            in_window[mark].append(fault)

    def allowed(mark: str, started: float) -> Fault | None:
        for fault in reversed(in_window[mark]):  # the latest fault that began before the request
            # Marked responses are expected while the fault lasts, and a while after (recovery,
            # and requests that started before the end but waited out a timeout).
            if fault.start - 0.1 <= started <= fault.end + RECOVERY_LIMIT + UPSTREAM_TIMEOUT:
                return fault
        return None

    personalized_unverified = gpc_shared = muted_shown = muted_unknown = excess = 0
    held_by_window: dict[str, float] = {}
    client_stalled = 0
    held_count: dict[str, int] = {}
    excess_max = 0.0
    statuses: dict[str, int] = {}
    new_policy_after = run.good_policy_at + RECOVERY_LIMIT
    stale_policy = 0
    for result in run.results:
        key = "cut" if result.status is None else str(result.status)
        statuses[key] = statuses.get(key, 0) + 1
        marks = []
        if result.status is None:
            marks.append("cut")
        elif result.status in (502, 504):
            marks.append(str(result.status))
        elif result.status != 200:
            problems.append(f"{result.user} at {result.started:.2f} s: status {result.status}")
        if result.degraded:
            marks.append("degraded")
        for mark in marks:
            cause = allowed(mark, result.started)
            if cause is None:
                timing = mark == "degraded"  # a store call over its budget: served closed, as promised
                (slow if timing else problems).append(
                    f"{result.user} at {result.started:.2f} s: {mark} outside any fault"
                )
            elif result.started >= cause.end:
                cause.after.append(result.started)
        if result.status != 200:
            continue
        personal = [item for item in result.kept if item.get("signals")]
        unverified = result.kind in ("never_asked", "minor") or result.degraded
        if unverified and personal:
            personalized_unverified += len(personal)
        if result.kind == "gpc":
            gpc_shared += sum(item["id"] in SHARED_DATA for item in result.kept)
        muted_since = run.acked.get(result.user) if result.kind == "writer" else None
        if result.kind == "muted" or (muted_since is not None and result.started > muted_since + PROPAGATION):
            shown = [item["id"] for item in result.kept if is_sports(item)]
            if result.degraded:
                # The store is down and this worker may never have seen the user's state: a mute it does
                # not know cannot be honoured (one it has seen is: tests/test_fail_modes.py). Counted apart.
                muted_unknown += len(shown)
                shown = []
            if shown and muted_shown < 5:
                problems.append(
                    f"{result.user} ({result.kind}) at {result.started:.2f} s, degraded {result.degraded}, "
                    f"muted since {muted_since}: shown {shown}"
                )
            muted_shown += len(shown)
        held = result.latency - result.upstream
        excess_max = max(excess_max, held - run.budget)
        if held > run.budget + SLACK:
            end = result.started + result.latency
            stalled = sum(max(0.0, min(end, at + lag) - max(result.started, at)) for at, lag in run.stalls)
            if held - stalled <= run.budget + SLACK:
                client_stalled += 1  # the time went to this client, not the sidecar
            else:
                excess += 1
                window = next(
                    (f.name for f in reversed(faults) if f.start - 0.1 <= result.started <= f.end + RECOVERY_LIMIT),
                    "none",
                )
                held_by_window[window] = max(held_by_window.get(window, 0.0), held)
                held_count[window] = held_count.get(window, 0) + 1
        if result.policy is not None and result.started > new_policy_after and result.policy != "demo-2026-11-b":
            stale_policy += 1
    for fault in faults:
        recovery, _ = fault.recovery()
        if recovery > RECOVERY_LIMIT:
            slow.append(f"{fault.name}: still marked {recovery:.2f} s after it ended")
    if personalized_unverified:
        problems.append(f"{personalized_unverified} personalized items shown without verified consent")
    if gpc_shared:
        problems.append(f"{gpc_shared} shared-data items shown under GPC")
    if muted_shown:
        problems.append(f"{muted_shown} items of a muted topic shown")
    if excess:
        where = ", ".join(f"{name}: {held_count[name]} (longest {held_by_window[name]:.2f} s)" for name in held_count)
        slow.append(
            f"{excess} requests held longer than the store budget + upstream time + {SLACK * 1000:.0f} ms; "
            f"by when they started: {where}"
        )
    if stale_policy:
        slow.append(f"{stale_policy} responses on the old policy {RECOVERY_LIMIT:g} s after the good reload")
    if missing:
        problems.append(f"{len(missing)} acknowledged changes missing at the end: {missing[:5]}")
    for when in run.cut_changes:
        if allowed("cut", when) is None:
            problems.append(f"a change's connection cut at {when:.2f} s, outside any fault")
    bad_refusals = sum(1 for status, retry in run.refused if status != 503 or not retry)
    if bad_refusals or run.other_changes:
        problems.append(f"changes refused without 503 + Retry-After: {bad_refusals}, {run.other_changes[:5]}")
    latencies = sorted(r.latency for r in run.results if r.status == 200)
    figures = {
        "requests": len(run.results),
        "statuses": statuses,
        "personalized_unverified": personalized_unverified,
        "gpc_shared": gpc_shared,
        "muted_shown": muted_shown,
        "muted_unknown": muted_unknown,
        "excess": excess,
        "client_stalled": client_stalled,
        "stalls": len(run.stalls),
        "longest_stall_ms": max((lag for _, lag in run.stalls), default=0.0) * 1000,
        "excess_max_ms": excess_max * 1000,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0,
        "acked": len(run.acked),
        "cut_changes": len(run.cut_changes),
        "refused": len(run.refused),
        "missing": len(missing),
        "stale_policy": stale_policy,
    }
    return problems, slow, figures


def report(
    faults: list[Fault], figures: dict[str, Any], problems: list[str], slow: list[str], args: argparse.Namespace
) -> str:
    # The run's totals first, then the first responses that broke a rule.
    ordered = [p for p in problems if " at " not in p.split(":")[0]] + [
        p for p in problems if " at " in p.split(":")[0]
    ]
    lines = [
        "# Faults under load (issue 8)",
        "",
        f"Run {datetime.now(UTC).isoformat(timespec='seconds')}: `python benchmarks/faults.py"
        f"{' --short' if args.short else ''}`: {args.duration:g} s at {args.rate:g} requests/s over {args.users} users "
        f"({', '.join(KINDS)}), `guardrail serve --workers 2`, Redis with fsync always, demo policy (fail_mode closed, "
        f"store budget {figures['budget_ms']:g} ms), upstream timeout {UPSTREAM_TIMEOUT:g} s.",
        "",
        "| fault | from, s | to, s | recovered after, s (limit 2) | lone marked responses later | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for fault in faults:
        recovery, lone = fault.recovery()
        lines.append(
            f"| {fault.name} | {fault.start:.1f} | {fault.end:.1f} | {recovery:.2f} | {lone} "
            f"| {'; '.join(fault.notes)} |"
        )
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(figures["statuses"].items()))
    lines += [
        "",
        "| figure | value |",
        "|---|---:|",
        f"| requests checked | {figures['requests']:,} ({statuses}) |",
        f"| personalized items shown without verified consent | {figures['personalized_unverified']} |",
        f"| shared-data items shown under GPC | {figures['gpc_shared']} |",
        f"| items of a muted topic shown (muted users; writers {PROPAGATION * 1000:.0f} ms after the ack) "
        f"| {figures['muted_shown']} |",
        f"| the same while the store was down, to a user this worker had not seen (cannot be known) "
        f"| {figures['muted_unknown']} |",
        f"| requests held past store budget + upstream time + {SLACK * 1000:.0f} ms | {figures['excess']} |",
        f"| most time held beyond the store budget and upstream time, ms | {figures['excess_max_ms']:.1f} |",
        f"| ... not counted: held while this client's own event loop stalled (it stalled {figures['stalls']} times, "
        f"longest {figures['longest_stall_ms']:.0f} ms) | {figures['client_stalled']} |",
        f"| latency of 200s, p50 / p99, ms | {figures['p50_ms']:.1f} / {figures['p99_ms']:.1f} |",
        f"| changes acknowledged / refused with 503 / acknowledged but missing at the end "
        f"| {figures['acked']} / {figures['refused']} / {figures['missing']} |",
        f"| changes whose connection was cut when their worker was killed (outcome unknown to the client) "
        f"| {figures['cut_changes']} |",
        f"| responses on the old policy after the good reload + 2 s | {figures['stale_policy']} |",
        "",
        "**All safety checks passed.**"
        if not problems
        else "**Safety checks failed:**\n\n" + "\n".join(f"- {p}" for p in ordered[:40]),
        "",
        "**All timing checks passed.**"
        if not slow
        else "**Timing checks failed:**\n\n"
        + "\n".join(f"- {p}" for p in sorted(slow, key=lambda p: " at " in p)[:20]),
    ]
    return "\n".join(lines) + "\n"


def log_summary(path: Path) -> str:
    """Each distinct warning or error of the sidecar's JSON log, with how often and when it first came."""
    seen: dict[str, list[Any]] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            entry = {"level": "error", "message": line, "time": ""}
        if not isinstance(entry, dict) or entry.get("level") not in ("warning", "error", "critical"):
            continue
        key = str(entry.get("message", ""))[:100]
        seen.setdefault(key, [0, entry.get("time", "")])[0] += 1
    rows = [f"| {count} | {first} | {message} |" for message, (count, first) in seen.items()]
    return "| count | first | message |\n|---:|---|---|\n" + "\n".join(rows) + "\n"


async def main_async(args: argparse.Namespace) -> int:
    budget = load_policy(POLICY).store_timeout_ms / 1000
    with tempfile.TemporaryDirectory(prefix="guardrail-faults-") as tmp, environment(Path(tmp)) as env:
        redis, upstream, sidecar, policy_path, upstream_url, sidecar_url = env
        await wait_until(f"{upstream_url}/healthz")
        await wait_until(f"{sidecar_url}/guardrail/readyz")
        run = Run(sidecar_url, args.users, args.rate, args.duration, budget)
        try:
            await run.setup()
            await run.warm_up()
            faults = timeline(args.duration)
            run.t0 = time.monotonic()
            await asyncio.gather(
                run.load(),
                run.writer(every=0.1),
                run.watch_own_loop(),
                inject(faults, redis, upstream, sidecar, policy_path, upstream_url, run),
            )
            await asyncio.sleep(1.0)  # the writer's last readers
            missing = await run.final_changes()
        finally:
            await run.client.aclose()
            await run.writer_client.aclose()
        problems, slow, figures = check(run, faults, missing)
        figures["budget_ms"] = budget * 1000
        text = report(faults, figures, problems, slow, args)
        if problems or slow:
            text += "\nThe sidecar's warnings and errors, by message:\n\n" + log_summary(Path(tmp) / "sidecar.log")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 1 if problems or (slow and not args.timing_report_only) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="about 30 s, as in CI")
    parser.add_argument("--duration", type=float, help="seconds of load (default 60, or 30 with --short)")
    parser.add_argument("--rate", type=float, default=100, help="guarded requests per second (default 100)")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--output", type=Path, help="default benchmarks/results/faults[-short].md")
    parser.add_argument(
        "--timing-report-only",
        action="store_true",
        help="fail on safety problems only; report the timing ones (CI: no timed asserts on a shared machine)",
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 30.0 if args.short else 60.0
    if args.output is None:
        args.output = RESULTS / ("faults-short.md" if args.short else "faults.md")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
