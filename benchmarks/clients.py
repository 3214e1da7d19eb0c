"""Ways to fetch the upstream's answer, one request at a time on a kept-alive connection: what an
HTTP client costs the sidecar per request. `benchmarks/sidecar.py` times them in process (CPU
seconds), `benchmarks/instructions.py clients` counts their instructions.

- `httpx.AsyncClient`: httpx over httpcore, the sidecar's client before `guardrail.sidecar.http1`;
- `httpx.AsyncClient over ConnectionPool`: the same client with the sidecar's pool as its transport,
  which shows what httpx's own layer costs (the reason the sidecar uses the pool directly);
- `ConnectionPool`: `guardrail.sidecar.http1`, as the sidecar uses it;
- `httpcore.AsyncConnectionPool`: the transport under httpx, alone (its streaming API, no httpx layer);
- `aiohttp.ClientSession`: aiohttp's client with its keep-alive connector, streaming the body;
- `asyncio streams`: a yardstick, the least an asyncio client can do (no parsing beyond the length).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import httpcore
import httpx

from guardrail.sidecar.http1 import ConnectionPool, Response, Timeout

CLIENTS = (
    "httpx.AsyncClient",
    "httpx.AsyncClient over ConnectionPool",
    "ConnectionPool",
    "httpcore.AsyncConnectionPool",
    "aiohttp.ClientSession",
    "asyncio streams",
)
PATH = b"/recommendations"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
POOL_TIMEOUT = Timeout(30.0, connect=5.0)  # the same, as the sidecar's pool takes it

Fetch = Callable[[], Awaitable[None]]


@asynccontextmanager
async def fetcher(client: str, port: int) -> AsyncIterator[Fetch]:
    """`await fetch()` gets one whole answer from the upstream on 127.0.0.1:`port` with `client`."""
    url = httpx.URL(f"http://127.0.0.1:{port}").copy_with(raw_path=PATH)
    if client == "ConnectionPool":
        async with ConnectionPool("127.0.0.1", port, timeout=POOL_TIMEOUT) as pool:
            headers = [(b"host", url.netloc)]

            async def with_pool() -> None:
                response = await pool.request(b"GET", PATH, headers)
                while await response.read():
                    pass
                await response.aclose()

            yield with_pool
    elif client.startswith("httpx.AsyncClient"):
        transport = PoolTransport(port) if client.endswith("ConnectionPool") else None
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT, trust_env=False) as http:

            async def with_httpx() -> None:
                response = await http.send(httpx.Request("GET", url), stream=True)
                async for _ in response.aiter_raw():
                    pass
                await response.aclose()

            yield with_httpx
    elif client == "httpcore.AsyncConnectionPool":
        async with httpcore.AsyncConnectionPool(max_connections=1) as core:
            target = str(url).encode()

            async def with_httpcore() -> None:
                async with core.stream(b"GET", target) as response:
                    async for _ in response.aiter_stream():
                        pass

            yield with_httpcore
    elif client == "aiohttp.ClientSession":
        connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=30)
        async with aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False) as session:

            async def with_aiohttp() -> None:
                async with session.get(str(url), allow_redirects=False) as response:
                    async for _ in response.content.iter_any():
                        pass

            yield with_aiohttp
    elif client == "asyncio streams":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw_request = b"GET %s HTTP/1.1\r\nhost: %s\r\n\r\n" % (PATH, url.netloc)

        async def with_streams() -> None:
            writer.write(raw_request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
            await reader.readexactly(length)

        try:
            yield with_streams
        finally:
            writer.close()
            await writer.wait_closed()
    else:
        raise ValueError(f"unknown client {client!r}: one of {', '.join(CLIENTS)}")


class PoolTransport(httpx.AsyncBaseTransport):
    """`guardrail.sidecar.http1.ConnectionPool` as an httpx transport, for `httpx.AsyncClient(transport=...)`."""

    def __init__(self, port: int) -> None:
        self.pool = ConnectionPool("127.0.0.1", port, timeout=POOL_TIMEOUT)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        framed = "content-length" in request.headers or "transfer-encoding" in request.headers
        answer = await self.pool.request(
            request.method.encode(), request.url.raw_path, request.headers.raw, request.stream if framed else None
        )
        return httpx.Response(answer.status, headers=answer.headers, stream=_Body(answer))

    async def aclose(self) -> None:
        await self.pool.aclose()


class _Body(httpx.AsyncByteStream):
    def __init__(self, answer: Response) -> None:
        self.answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while piece := await self.answer.read():
            yield piece

    async def aclose(self) -> None:
        await self.answer.aclose()
