"""Helpers for the path attacks: requests whose path goes out exactly as spelled (httpx would tidy it
first), an upstream that answers every path with items and remembers each request target, and the
policy's routes with all their items at `/items`."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote

import h11
import orjson
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardrail.sidecar import Sidecar, build_sidecar
from tests.sidecar.servers import DEADLINE, Scripted, scripted, serving, write_policy
from tests.upstream import DEFAULT_ITEMS, call, http_scope

ALICE = [(b"x-user-id", b"alice")]
ROUTES: list[dict[str, Any]] = [
    {
        "path": "/recommendations",
        "items": "/items",
        "non_personalized": {"rewrite_to": "/recommendations/popular", "strip_headers": ["cookie"]},
    },
    {"path": "/list", "items": "/items"},
    {"path": "/feed/*", "items": "/items"},
]
ITEMS_BODY = orjson.dumps({"items": DEFAULT_ITEMS})
# Alice gave no consent: every personal suggestion, the gambling one (g1) among them, is hidden.
HIDDEN = "g1"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def checked(self) -> bool:
        """The guardrail checked this answer: it says so, and the item Alice must not see is gone."""
        return "guardrail-decision" in self.headers and HIDDEN.encode() not in self.body

    def json(self) -> Any:
        return orjson.loads(self.body)


def scope_for(target: str, headers: list[tuple[bytes, bytes]] | None = None, method: str = "GET") -> Any:
    """An ASGI scope as a server makes it from this request target: `raw_path` as sent, `path` decoded."""
    path, _, query = target.partition("?")
    scope = http_scope(unquote(path), method=method, headers=ALICE if headers is None else headers)
    return {**scope, "raw_path": path.encode("ascii"), "query_string": query.encode("ascii")}


async def asgi_get(app: Any, target: str, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    """Call the ASGI app as a server would for `GET target`."""
    sent: list[Message] = await call(app, scope_for(target, headers))
    start = sent[0]
    return Answer(
        start["status"],
        {name.decode("latin-1"): value.decode("latin-1") for name, value in start["headers"]},
        b"".join(message.get("body", b"") for message in sent[1:]),
    )


async def raw_get(url: str, target: str, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    """`GET target` over a socket, the target byte for byte as given."""
    host, _, port = url.removeprefix("http://").partition(":")
    connection = h11.Connection(h11.CLIENT)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        request = h11.Request(
            method="GET",
            target=target.encode("ascii"),
            headers=[(b"host", f"{host}:{port}".encode()), *(ALICE if headers is None else headers)],
        )
        writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
        await writer.drain()
        status, answer_headers, body = 0, {}, b""
        async with asyncio.timeout(DEADLINE):
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    answer_headers = {name.decode(): value.decode("latin-1") for name, value in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return Answer(status, answer_headers, body)
    finally:
        writer.close()


@asynccontextmanager
async def items_upstream() -> AsyncIterator[Scripted]:
    """A raw upstream that answers every request with the default items; `targets` lists what it was asked."""

    async def answer(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_head(reader):
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(ITEMS_BODY)}\r\n\r\n".encode()
                + ITEMS_BODY
            )
            await writer.drain()

    async with scripted(answer) as server:
        yield server


def targets(server: Scripted) -> list[str]:
    """The request targets the raw upstream was sent, in order."""
    return [head.split(b" ", 2)[1].decode("latin-1") for head in server.heads]


@asynccontextmanager
async def sidecar(upstream_url: str, **policy: Any) -> AsyncIterator[str]:
    """The sidecar in front of `upstream_url`, with the test policy's top-level keys replaced; yields its URL."""
    with tempfile.TemporaryDirectory() as directory:
        path = write_policy(Path(directory) / "policy.yaml", **policy)
        app = build_sidecar(path, upstream_url, store="memory://", registry=CollectorRegistry())
        async with serving(app) as url:
            yield url


def blocking_get(url: str, target: str, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    """`raw_get` for code outside an event loop (hypothesis examples, which run one by one)."""
    return asyncio.run(raw_get(url, target, headers))


class Background:
    """ASGI apps served by uvicorn in an event loop of their own thread, for the whole of a `with`."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="background servers", daemon=True)
        self._stack = AsyncExitStack()
        self._directory = tempfile.TemporaryDirectory()
        self.directory = Path(self._directory.name)

    def serve(self, app: ASGIApp) -> str:
        """Serve `app` (with its lifespan) on a free port; its URL."""
        entered = asyncio.run_coroutine_threadsafe(self._stack.enter_async_context(serving(app)), self._loop)
        return entered.result(DEADLINE)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stack.aclose(), self._loop).result(DEADLINE)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(DEADLINE)
        self._loop.close()
        self._directory.cleanup()


class WithoutSighup:
    """A sidecar that starts without taking SIGHUP, which only the main thread's loop can: to serve it
    from a `Background` thread."""

    def __init__(self, app: Sidecar) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await receive()
        await self.app.startup(sighup=False)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await self.app.shutdown()
        await send({"type": "lifespan.shutdown.complete"})
