"""`ReverseProxy`: the ASGI app behind the guardrail in `guardrail serve`, forwarding every request
to the upstream service over one pool of keep-alive connections (`guardrail.http1.ConnectionPool`).

- Bodies stream both ways as they come, never buffered here (the guardrail buffers guarded routes
  itself), and byte for byte: a compressed body stays compressed, with its `Content-Encoding`.
- Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and those it names, `Keep-Alive`, `TE`, `Trailer`,
  `Transfer-Encoding`, `Upgrade`, `Proxy-*`) are dropped both ways. The upstream is asked for its
  own host; it learns the client's in `X-Forwarded-Host`, `-Proto` and `-For` (appended to).
  `Date` and `Server` come from this server, as with nginx.
- An upstream that cannot be reached answers `502`, one that does not answer in time `504`, both
  problem+json saying nothing internal, counted in `guardrail_upstream_errors_total{kind}`.
- No environment proxies, no cookie jar (`Set-Cookie` is the client's), no redirects followed (a
  redirect is the client's to follow).

The pool is not an `httpx.AsyncClient`'s transport: that client's own layer (URLs, headers, cookies,
auth and redirect steps, response objects) costs about 420,000 instructions a request over this pool,
three and a half times the pool's whole exchange (benchmarks/results/clients.md). httpx's exceptions remain.

Start it in the ASGI lifespan (it handles a lifespan scope itself) or with `async with proxy:`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import anyio
import httpx
from starlette.types import Message, Receive, Scope, Send

from guardrail.http1 import ConnectionPool, Response
from guardrail.metrics import Metrics
from guardrail.responder import UPSTREAM_ERROR
from guardrail.routes import PathError, forwardable
from guardrail.web.problem import problem

logger = logging.getLogger("guardrail")

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)  # and every `proxy-*` header
# Not passed on to the upstream: it gets its own Host (the client's goes in X-Forwarded-Host), and
# uvicorn has answered `Expect: 100-continue` already.
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"expect"}
# Not passed back: this server writes its own Date, and Server would name the upstream's software.
_NOT_RETURNED = HOP_BY_HOP | {b"date", b"server"}
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
CONNECT_TIMEOUT = 5.0


class _ClientGone(Exception):
    """The client went away while its request body was being sent upstream."""


class UpstreamInterrupted(Exception):
    """The upstream's response broke off after it had started: the server must abort the connection,
    so that the client sees a broken response rather than a complete-looking, truncated one."""


class ReverseProxy:
    """Forward requests to `upstream` (`http://host:port`, optionally with a path prefix).

    `timeout`: seconds the upstream may take to answer, and between two pieces of its body (connecting
    gets at most 5). `trusts_forwarded(scope)`: whether this peer's own `X-Forwarded-Proto` and
    `-Host` are kept (by default nobody's: they are set from what this server saw).
    """

    def __init__(
        self,
        upstream: str,
        *,
        timeout: float = 30.0,
        metrics: Metrics | None = None,
        trusts_forwarded: Callable[[Scope], bool] | None = None,
        max_connections: int = 512,
    ) -> None:
        url = httpx.URL(upstream)
        if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
            raise ValueError(
                f"the upstream must be an http:// or https:// URL with a host and no query, such as "
                f"http://127.0.0.1:8080; got {upstream!r}"
            )
        self.upstream = url
        self._prefix = url.raw_path.rstrip(b"/")
        self._host = url.netloc  # the upstream's own Host: host, and port unless the scheme's default
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))
        self.metrics = metrics
        self._trusts_forwarded = trusts_forwarded or (lambda scope: False)
        self.max_connections = max_connections
        self.pool: ConnectionPool | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.pool is None:
            self.pool = ConnectionPool(
                self.upstream.host,
                self._port,
                timeout=self.timeout,
                # Verified as httpx verified it (certifi's roots), SSL_CERT_FILE and _DIR aside.
                tls=httpx.create_ssl_context(trust_env=False) if self.upstream.scheme == "https" else None,
                max_connections=self.max_connections,
                max_idle=64,
            )

    async def aclose(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.aclose()

    async def __aenter__(self) -> ReverseProxy:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def check(self) -> str | None:
        """A readiness check: None when the upstream accepts a TCP connection, else why not."""
        try:
            async with asyncio.timeout(self.timeout.connect or CONNECT_TIMEOUT):
                _, writer = await asyncio.open_connection(self.upstream.host, self._port)
        except TimeoutError:
            return "the upstream does not accept connections in time"
        except OSError:
            return "the upstream cannot be reached"
        writer.close()
        await writer.wait_closed()
        return None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets are not proxied: refused (the server answers 403)
            await send({"type": "websocket.close", "code": 1008})
            return
        pool = self.pool
        if pool is None:
            raise RuntimeError("the ReverseProxy is not started: serve it with a lifespan, or `async with proxy:`")
        try:
            target = self._target(scope)
        except PathError as exc:
            await problem(400, "Bad Request", str(exc))(scope, receive, send)
            return
        headers = self._request_headers(scope)
        has_body = any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])
        body = _RequestBody(receive) if has_body else None
        try:
            response = await pool.request(scope["method"].encode("latin-1"), target, headers, body)
        except _ClientGone:
            return  # nobody to answer
        except httpx.TimeoutException as exc:
            await self._fail(send, "timeout", exc)
            return
        except httpx.ConnectError as exc:
            await self._fail(send, "connect", exc)
            return
        except httpx.TransportError as exc:  # the upstream broke the connection or spoke bad HTTP
            await self._fail(send, "protocol", exc)
            return
        try:
            returned = _response_headers(response.headers)
            await send({"type": "http.response.start", "status": response.status, "headers": returned})
            if (
                any(name == b"content-length" for name, _ in returned)
                or scope["method"] == "HEAD"
                or (body is not None and not body.done)
            ):
                await self._relay(response, send)
            else:
                # A body of unknown length may never end (server-sent events, long polls): stop
                # reading it when the client goes away. (The request body is all read by now, so
                # nothing else is waiting on `receive`.)
                async with anyio.create_task_group() as group:
                    group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
                    await self._relay(response, send)
                    group.cancel_scope.cancel()
        finally:
            await response.aclose()

    async def _relay(self, response: Response, send: Send) -> None:
        # Each chunk goes on as it comes: holding one back until the next arrives would stall a stream.
        try:
            while chunk := await response.read():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.TransportError as exc:
            self._count("interrupted")
            logger.warning(
                "the upstream response broke off: %s", _describe(exc), extra={"upstream": str(self.upstream)}
            )
            raise UpstreamInterrupted("the upstream response broke off") from None
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _fail(self, send: Send, kind: str, error: Exception) -> None:
        self._count(kind)
        logger.warning("upstream %s error: %s", kind, _describe(error), extra={"upstream": str(self.upstream)})
        if kind == "timeout":
            response = problem(
                504,
                "Gateway Timeout",
                f"The service behind the guardrail did not answer within {self.timeout.read:g} seconds. "
                "Try again in a moment.",
            )
        else:
            response = problem(
                502,
                "Bad Gateway",
                "The service behind the guardrail could not be reached. Try again in a moment."
                if kind == "connect"
                else "The service behind the guardrail broke off its answer. Try again in a moment.",
            )
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
                UPSTREAM_ERROR: kind,
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    def _count(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream_errors.labels(kind).inc()

    # -- the request to the upstream ----------------------------------------------------------

    def _target(self, scope: Scope) -> bytes:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope["query_string"]
        # Dot segments resolved here, so that `..` cannot climb out of the upstream's prefix.
        return self._prefix + forwardable(raw_path) + (b"?" + query if query else b"")

    def _request_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        named = _connection_names(scope["headers"])
        headers: list[tuple[bytes, bytes]] = [(b"host", self._host)]
        forwarded_for: list[bytes] = []
        incoming: dict[bytes, bytes] = {}
        host = b""
        for name, value in scope["headers"]:
            if name in _NOT_FORWARDED or name in named or name.startswith(b"proxy-"):
                if name == b"host":
                    host = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name in _FORWARDED:
                incoming[name] = value
            else:
                headers.append((name, value))
        client = scope.get("client")
        if client:
            forwarded_for.append(client[0].encode("latin-1"))
        if forwarded_for:
            headers.append((b"x-forwarded-for", b", ".join(forwarded_for)))
        # A trusted proxy in front (a TLS terminator, say) knows better how the client came in.
        trusted = bool(incoming) and self._trusts_forwarded(scope)
        proto = incoming.get(b"x-forwarded-proto") if trusted else None
        headers.append((b"x-forwarded-proto", proto or scope.get("scheme", "http").encode("latin-1")))
        forwarded_host = (incoming.get(b"x-forwarded-host") if trusted else None) or host
        if forwarded_host:
            headers.append((b"x-forwarded-host", forwarded_host))
        return headers


def _connection_names(headers: Any) -> frozenset[bytes]:
    """The headers a `Connection` header names: hop-by-hop too (RFC 9110 §7.6.1)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names)


def _response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    named = _connection_names(raw)
    out = []
    for name, value in raw:
        lowered = name.lower()
        if lowered not in _NOT_RETURNED and lowered not in named and not lowered.startswith(b"proxy-"):
            out.append((lowered, value))
    return out


class _RequestBody:
    """The client's request body as an async iterator of chunks, read from `receive` as the pool sends it."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self.done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            self.done = not message.get("more_body", False)
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk


async def _cancel_on_disconnect(receive: Receive, cancel: anyio.CancelScope) -> None:
    message: Message = await receive()
    while message["type"] != "http.disconnect":
        message = await receive()
    cancel.cancel()


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
