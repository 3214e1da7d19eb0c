"""Real servers for the sidecar tests, each on a free port and stopped when its test is done:

- `RecordingUpstream`: a small Starlette service (uvicorn in a thread) that answers like a
  recommendation service and remembers every request it got, headers and body included;
- `scripted(handle)`: a raw TCP server whose answers a test writes byte by byte (`answer_each`: a
  well-behaved keep-alive one), counting connections and request heads;
- `serving(app)`: an ASGI app (the sidecar) served by uvicorn in the test's own event loop;
- `ServeProcess`: `guardrail serve` as a user runs it, a subprocess whose JSON log lines are kept.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import orjson
import uvicorn
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.conftest import BASE_POLICY, ROOT
from tests.upstream import DEFAULT_ITEMS

HOST = "127.0.0.1"
STATIC_GZIP = gzip.compress(b"plain text, " * 200, mtime=0)  # what /static/gzip sends
DEADLINE = 30.0  # seconds to wait for a server or a process; generous, as the machine is shared


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def write_policy(path: Path, **overrides: Any) -> Path:
    """The tests' policy as a YAML file, with top-level keys replaced."""
    data = copy.deepcopy(BASE_POLICY)
    data.update(overrides)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def wait_for(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Poll until `condition()` is truthy (its value is returned); fail saying `what` did not happen."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not happen within {deadline:g} s")
        time.sleep(0.05)


# -- the upstream ---------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: bytes
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass
class RecordingUpstream:
    """The service behind the sidecar. `gate` holds back the second half of /stream, `uploading` is
    set when /upload has its first chunk, `stream_closed` when the client of /endless went away."""

    seen: list[Seen] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    uploading: threading.Event = field(default_factory=threading.Event)
    stream_closed: threading.Event = field(default_factory=threading.Event)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def app(self) -> Starlette:
        recommendations = orjson.dumps({"items": DEFAULT_ITEMS, "page": 1})
        feed = gzip.compress(orjson.dumps({"data": {"items": DEFAULT_ITEMS}}))

        async def items(request: Request) -> Response:
            await self._record(request)
            return Response(recommendations, media_type="application/json")

        async def gzipped(request: Request) -> Response:
            await self._record(request)
            body = feed if request.url.path.startswith("/feed/") else STATIC_GZIP
            kind = "application/json" if request.url.path.startswith("/feed/") else "text/plain"
            return Response(body, media_type=kind, headers={"content-encoding": "gzip"})

        async def echo(request: Request) -> Response:
            seen = await self._record(request)
            response = Response(
                orjson.dumps({"path": seen.path, "body": seen.body.decode()}),
                status_code=201,
                media_type="application/json",
                headers={
                    "connection": "x-private",
                    "x-private": "secret",
                    "keep-alive": "timeout=5",
                    "proxy-authenticate": "Basic",
                    "server": "upstream/1.0",
                    "x-kept": "yes",
                },
            )
            response.set_cookie("a", "1")
            response.set_cookie("b", "2")
            return response

        async def upload(request: Request) -> Response:
            chunks = 0
            async for chunk in request.stream():
                if chunk:
                    chunks += 1
                    self.uploading.set()
            return Response(orjson.dumps({"chunks": chunks}), media_type="application/json")

        async def stream(request: Request) -> StreamingResponse:
            async def parts() -> AsyncIterator[bytes]:
                yield b"first;"
                await asyncio.to_thread(self.gate.wait, DEADLINE)
                yield b"second"

            return StreamingResponse(parts(), media_type="text/plain")

        async def endless(request: Request) -> StreamingResponse:
            async def parts() -> AsyncIterator[bytes]:
                try:
                    while True:
                        yield b"data: tick\n\n"
                        await asyncio.sleep(0.02)
                finally:
                    self.stream_closed.set()

            return StreamingResponse(parts(), media_type="text/event-stream")

        async def slow(request: Request) -> Response:
            for _ in range(100):  # 5 s, or until the server stops
                if self.gate.is_set():
                    break
                await asyncio.sleep(0.05)
            return Response(b"{}", media_type="application/json")

        return Starlette(
            routes=[
                Route("/recommendations", items),
                Route("/recommendations/popular", items),
                Route("/feed/gzip", gzipped),
                Route("/static/gzip", gzipped),
                Route("/upload", upload, methods=["POST"]),
                Route("/stream", stream),
                Route("/endless", endless),
                Route("/slow", slow),
                Route("/recommendations/slow", slow),
                Route("/{rest:path}", echo, methods=["GET", "POST", "PUT", "DELETE"]),
            ]
        )

    def reset(self) -> None:
        self.seen.clear()
        self.gate, self.uploading, self.stream_closed = threading.Event(), threading.Event(), threading.Event()

    async def _record(self, request: Request) -> Seen:
        seen = Seen(
            request.method,
            request.url.path,
            request.scope["query_string"],
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
            await request.body(),
        )
        self.seen.append(seen)
        return seen

    def __enter__(self) -> Self:
        config = uvicorn.Config(
            self.app(), host=HOST, port=self.port, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="recording upstream", daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, "the upstream starting")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.gate.set()
        self._server.should_exit = True
        self._thread.join(DEADLINE)


# -- an upstream that says exactly what a test tells it to ---------------------------------------

Handler = Callable[["Scripted", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Scripted:
    """A raw TCP server on a free port: `handle(server, reader, writer)` runs for each connection.
    It counts the connections it accepted and the request heads `read_head` read."""

    port: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def read_head(self, reader: asyncio.StreamReader) -> bytes:
        """The next request head (an empty one when the client hung up instead)."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return b""
        self.heads.append(head)
        return head


@asynccontextmanager
async def scripted(handle: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Scripted]:
    state = Scripted()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await handle(state, reader, writer)
        except ConnectionError:
            pass  # the client went first: some tests are about that
        finally:
            writer.close()

    server = await asyncio.start_server(connected, HOST, 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()
        await server.wait_closed()


async def answer_each(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive: every request on the connection gets `hello` with its Content-Length."""
    while await server.read_head(reader):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        await writer.drain()


# -- the sidecar in this process ------------------------------------------------------------------


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` (with its lifespan) on a free port in the running event loop; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", lifespan="on", proxy_headers=False, server_header=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(DEADLINE):
            while not server.started:
                if task.done():
                    task.result()
                    raise AssertionError("the sidecar stopped before it started serving")
                await asyncio.sleep(0.01)
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        await task


# -- `guardrail serve` as a subprocess ------------------------------------------------------------


class ServeProcess:
    """`guardrail serve ARGS...` in its own process group; stderr's JSON lines are kept in `lines`."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        environment = {key: value for key, value in os.environ.items() if not key.startswith(("GUARDRAIL_", "PROM"))}
        environment.update(PYTHONUNBUFFERED="1", **(env or {}))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "guardrail.cli", "serve", "--port", str(self.port), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=environment,
            start_new_session=True,  # its workers share our child's process group, to be stopped with it
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="guardrail serve stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def logs(self, message_start: str) -> list[dict[str, Any]]:
        """The JSON log lines whose message starts with `message_start`."""
        found = []
        for line in list(self.lines):
            if line.startswith("{"):
                entry = orjson.loads(line)
                if str(entry.get("message", "")).startswith(message_start):
                    found.append(entry)
        return found

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"guardrail serve exited ({self.process.returncode}):\n" + "\n".join(self.lines))
            try:
                return httpx.get(f"{self.url}/guardrail/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "guardrail serve answering /guardrail/readyz")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> int:
        """SIGTERM, as a container runtime would; SIGKILL to the whole group if it does not stop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(DEADLINE)
        self._reader.join(DEADLINE)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode

    def kill_group(self) -> None:
        """Whatever is left of our process group (workers of a parent that died): gone."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of `/metrics`, by (name, labels)."""
    return scrape_text(httpx.get(f"{url}/metrics", timeout=5).text)


def scrape_text(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def live_policies(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, str]:
    """pid → the policy id that worker serves (guardrail_policy_info == 1)."""
    return {
        dict(labels)["pid"]: dict(labels)["policy"]
        for (name, labels), value in samples.items()
        if name == "guardrail_policy_info" and value == 1
    }


@contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    """`guardrail serve ARGS...`, stopped (and its process group killed) however the test ends."""
    process = ServeProcess(*args, env=env)
    try:
        yield process
    finally:
        process.stop()
        process.kill_group()
