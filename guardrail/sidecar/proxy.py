"""`ReverseProxy`: the ASGI app behind the guardrail in `guardrail serve`, forwarding every request
to the upstream service over one pool of keep-alive connections (`guardrail.sidecar.http1.ConnectionPool`).

- Bodies stream both ways as they come (the guardrail buffers guarded routes itself), and byte for
  byte: a compressed body stays compressed, with its `Content-Encoding`. A request body up to
  `BUFFERED_BODY` is read whole before an upstream connection is taken, so that clients sending
  theirs slowly hold none of the pool; a client has `body_timeout` seconds for its whole body, else
  `408`. Reading an answer stops when its client goes away, and that upstream connection is closed.
- Hop-by-hop headers are dropped both ways, and the upstream learns the client's host, scheme and
  address in `X-Forwarded-*` (proxy_headers.py).
- An upstream that cannot be reached answers `502`, one that does not answer in time `504`, both
  problem+json saying nothing internal, counted in `guardrail_upstream_errors_total{kind}`.
- An `https://` upstream is verified against certifi's roots, or the CA file given, and may be shown a client
  certificate (`UpstreamTLS`, guardrail/sidecar/tls.py); a refused certificate is `502` too (kind `tls`), and
  the log says which setting would fix it, from the start on.
- Every request that reaches the upstream is counted by route and status class, with the upstream's
  time to answer (traffic.py).
- Traced (`guardrail.tracing`), each request to the upstream is a `guardrail.upstream` span, and the
  upstream is sent its `traceparent` in place of the client's.
- No environment proxies, no cookie jar (`Set-Cookie` is the client's), no redirects followed (a
  redirect is the client's to follow).

The pool is used directly, without a general-purpose client's layer (URLs, cookies, auth and redirect
steps, response objects) in between: the proxy needs none of it (benchmarks/clients.py measures what
that layer costs).

Start it in the ASGI lifespan (it handles a lifespan scope itself) or with `async with proxy:`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from guardrail.metrics import OTHER_ROUTE, Metrics
from guardrail.paths import PathError, forwardable
from guardrail.responder import UPSTREAM_ERROR
from guardrail.routes import ROUTE_TEMPLATE
from guardrail.sidecar.bodies import ClientGone, ClientTooSlow, RequestBody, is_long, unless_client_leaves
from guardrail.sidecar.errors import ConnectError, TLSError, UpstreamError, UpstreamTimeout
from guardrail.sidecar.http1 import ConnectionPool, Headers, Response, Timeout
from guardrail.sidecar.proxy_headers import request_headers, response_headers
from guardrail.sidecar.tls import TLSSettingsProblem, UpstreamTLS, describe_tls_error
from guardrail.sidecar.traffic import ProxiedTraffic
from guardrail.sidecar.upstream import parse_upstream
from guardrail.web.problem import problem

if TYPE_CHECKING:
    from guardrail.tracing import Tracing

logger = logging.getLogger("guardrail")

CONNECT_TIMEOUT = 5.0
# A request body up to this size is read whole before it goes upstream: what a slow client holds
# meanwhile is its own connection to this server, not one of the pool's.
BUFFERED_BODY = 64 * 1024


_BAD_GATEWAY = {
    "connect": "The service behind the guardrail could not be reached. Try again in a moment.",
    "tls": "The service behind the guardrail could not be reached over a trusted connection. Try again later.",
    "protocol": "The service behind the guardrail broke off its answer. Try again in a moment.",
}


class UpstreamInterrupted(Exception):
    """The upstream's response broke off after it had started: the server must abort the connection,
    so that the client sees a broken response rather than a complete-looking, truncated one."""


class ReverseProxy:
    """Forward requests to `upstream` (`http://host:port`, optionally with a path prefix).

    `timeout`: seconds the upstream may take to answer, and between two pieces of its body (connecting
    gets at most 5). `body_timeout`: seconds a client has to send its whole request body (by default
    `timeout`). `trusts_forwarded(scope)`: whether this peer's own `X-Forwarded-Proto` and `-Host` are
    kept (by default nobody's: they are set from what this server saw). `tls`: the CA file, client
    certificate and server name for an `https://` upstream (ValueError, naming the setting, when unusable).
    `tracing`: the spans to make (`guardrail.tracing.tracing_for()`), None when not tracing.
    """

    def __init__(
        self,
        upstream: str,
        *,
        timeout: float = 30.0,
        metrics: Metrics | None = None,
        trusts_forwarded: Callable[[Scope], bool] | None = None,
        max_connections: int = 512,
        body_timeout: float | None = None,
        tls: UpstreamTLS | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.upstream = url = parse_upstream(upstream)
        tls = tls or UpstreamTLS()
        if url.scheme != "https" and tls.configured:
            raise TLSSettingsProblem(
                f"the upstream's TLS settings are given, but the upstream is {url}: use an https:// URL, or "
                "unset GUARDRAIL_UPSTREAM_CA_FILE, _CLIENT_CERT, _CLIENT_KEY and _SERVER_NAME"
            )
        self.tls = tls
        # Made now, so that a file that cannot be used stops the start rather than fails every request.
        self._tls_context = tls.context() if url.scheme == "https" else None
        self._probe: asyncio.Task[None] | None = None
        self._prefix = url.prefix
        self._host = url.authority  # the upstream's own Host: host, and port unless the scheme's default
        self._port = url.port
        self.timeout = Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))
        self.body_timeout = timeout if body_timeout is None else body_timeout
        self.metrics = metrics
        self._traffic = ProxiedTraffic(metrics) if metrics is not None else None
        self._trusts_forwarded = trusts_forwarded or (lambda scope: False)
        self.max_connections = max_connections
        self.tracing = tracing
        self.pool: ConnectionPool | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.pool is None:
            self.pool = ConnectionPool(
                self.upstream.host,
                self._port,
                timeout=self.timeout,
                tls=self._tls_context,
                server_name=self.tls.server_name,
                max_connections=self.max_connections,
                max_idle=64,
            )
            if self._tls_context is not None:
                self._probe = asyncio.create_task(self._log_refused_certificate())

    async def _log_refused_certificate(self) -> None:
        """At start, one handshake: a refused certificate is said now, and not only at the first request.
        An upstream that is not up yet is not: it may be starting too, and requests will say so."""
        try:
            await self._connect_once()
        except ssl.SSLError as exc:
            where = {"upstream": str(self.upstream)}
            logger.error("no TLS with the upstream: %s", describe_tls_error(exc), extra=where)
        except OSError:
            pass

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
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
        """A readiness check: None when the upstream accepts a TCP connection (and a TLS handshake, for
        `https://`), else why not (in words that name nothing internal: /readyz may be public)."""
        try:
            await self._connect_once()
        except TimeoutError:
            return "the upstream does not accept connections in time"
        except ssl.SSLError:
            return "no trusted TLS connection to the upstream"
        except OSError:
            return "the upstream cannot be reached"
        return None

    async def _connect_once(self) -> None:
        tls = self._tls_context
        async with asyncio.timeout(self.timeout.connect or CONNECT_TIMEOUT):
            _, writer = await asyncio.open_connection(
                self.upstream.host,
                self._port,
                ssl=tls,
                server_hostname=(self.tls.server_name or self.upstream.host) if tls else None,
            )
        writer.close()
        with contextlib.suppress(OSError):  # (a TLS upstream may end it less politely)
            await writer.wait_closed()

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
        headers = request_headers(scope, self._host, self._trusts_forwarded)
        route: str = scope.get(ROUTE_TEMPLATE, OTHER_ROUTE)
        started = time.perf_counter()
        try:
            body = await self._request_body(scope, receive, headers)
            started = time.perf_counter()  # the upstream's time: from here to its answer's head
            if self.tracing is None:
                response = await pool.request(scope["method"].encode("latin-1"), target, headers, body)
            else:
                response = await self._traced(self.tracing, pool, scope, target, headers, body)
        except ClientGone:
            return  # nobody to answer
        except ClientTooSlow:
            await self._too_slow(send)
            return
        except UpstreamTimeout as exc:
            await self._fail(send, "timeout", exc, route, started)
            return
        except TLSError as exc:
            await self._fail(send, "tls", exc, route, started)
            return
        except ConnectError as exc:
            await self._fail(send, "connect", exc, route, started)
            return
        except UpstreamError as exc:  # the upstream broke the connection or spoke bad HTTP
            await self._fail(send, "protocol", exc, route, started)
            return
        if self._traffic is not None:
            self._traffic.count(route, response.status, time.perf_counter() - started)
        try:
            returned = response_headers(response.headers)
            await send({"type": "http.response.start", "status": response.status, "headers": returned})
            await self._relay(response, send, receive if is_long(returned) else None)
        finally:
            await response.aclose()  # closes the connection, rather than reuse it, if the answer was not all read

    async def _traced(
        self,
        tracing: Tracing,
        pool: ConnectionPool,
        scope: Scope,
        target: bytes,
        headers: Headers,
        body: RequestBody | None,
    ) -> Response:
        span = tracing.upstream(scope, headers, self.upstream.host, self._port)
        try:
            response = await pool.request(scope["method"].encode("latin-1"), target, headers, body)
        except BaseException as exc:
            tracing.failed(span, type(exc).__name__)
            raise
        tracing.answered(span, response.status)
        return response

    async def _relay(self, response: Response, send: Send, receive: Receive | None) -> None:
        """Pass the body on; with `receive` (a long body), only while the client is there."""
        # Each chunk goes on as it comes: holding one back until the next arrives would stall a stream.
        chunk = await self._read(response)
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not response.done:
                # More is coming, perhaps for long (a download, a stream that never ends): rather than
                # read it all for nobody, stop when the client goes away. (The request body is all
                # read, or no longer wanted, by now: nothing else is waiting on `receive`.)
                if receive is None:
                    await self._relay_rest(response, send)
                elif await unless_client_leaves(self._relay_rest(response, send), receive):
                    return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _relay_rest(self, response: Response, send: Send) -> None:
        while chunk := await self._read(response):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _read(self, response: Response) -> bytes:
        try:
            return await response.read()
        except UpstreamError as exc:
            self._count("interrupted")
            logger.warning(
                "the upstream response broke off: %s", _describe(exc), extra={"upstream": str(self.upstream)}
            )
            raise UpstreamInterrupted("the upstream response broke off") from None

    async def _request_body(self, scope: Scope, receive: Receive, headers: Headers) -> RequestBody | None:
        """The client's body, read ahead up to `BUFFERED_BODY`; a whole one goes with its length."""
        if not any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"]):
            return None
        body = RequestBody(receive, self.body_timeout)
        size = await body.read_ahead(BUFFERED_BODY)
        if size is not None and not any(name == b"content-length" for name, _ in headers):
            headers.append((b"content-length", b"%d" % size))  # (it came chunked)
        return body

    async def _too_slow(self, send: Send) -> None:
        response = problem(
            408,
            "Request Timeout",
            f"The request body did not arrive within {_seconds(self.body_timeout)}. Send it again, without pauses.",
            headers={"connection": "close"},  # the rest of the body may still be on its way
        )
        await send({"type": "http.response.start", "status": 408, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _fail(self, send: Send, kind: str, error: Exception, route: str, started: float) -> None:
        self._count(kind)
        if self._traffic is not None:
            self._traffic.count(route, None, time.perf_counter() - started)
        # A refused certificate fails every request until someone changes a setting: an error, not a blip.
        level = logging.ERROR if kind == "tls" else logging.WARNING
        why = _describe(error)
        if kind == "protocol" and self._tls_context is not None and self.tls.client_cert is None:
            # With TLS 1.3 a server refuses a client certificate after the handshake: some end the connection.
            why += "; if the upstream wants a client certificate, set GUARDRAIL_UPSTREAM_CLIENT_CERT"
        logger.log(level, "upstream %s error: %s", kind, why, extra={"upstream": str(self.upstream)})
        if kind == "timeout":
            response = problem(
                504,
                "Gateway Timeout",
                f"The service behind the guardrail did not answer within {self.timeout.read:g} seconds. "
                "Try again in a moment.",
            )
        else:
            response = problem(502, "Bad Gateway", _BAD_GATEWAY[kind])
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


def _seconds(seconds: float) -> str:
    return f"{seconds:g} second" if seconds == 1 else f"{seconds:g} seconds"


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
