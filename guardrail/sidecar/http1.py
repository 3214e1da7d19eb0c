"""`ConnectionPool`: the sidecar's HTTP/1.1 client to its upstream. A keep-alive pool of asyncio
Protocol connections (`guardrail.sidecar.connection.Connection`) whose answers httptools parses.
It does only what the proxy needs, so that a request costs a few function calls beyond asyncio's
(benchmarks/clients.py compares it with httpx).

- A connection is reused only after an answer read to its end that did not ask to close it. One that
  the upstream closed while it sat idle is dropped. A request on a kept-alive connection that turns out
  closed goes again on another one when nothing of it went out, or when nothing of the answer came and
  the request is idempotent without a body: nothing the client sent is lost, nothing can happen twice.
- `Timeout` bounds each phase: connecting, waiting for a free connection, writing the request, and
  waiting for the answer and for each next piece of it.

Errors are those of `guardrail.sidecar.errors`: `ConnectError`/`ConnectTimeout` (no connection),
`PoolTimeout` (every connection busy too long), `WriteError`/`WriteTimeout` (the request could not go
out), `ReadTimeout` (no answer, or no next piece of it, in time), `ReadError` and `RemoteProtocolError`
(the connection broke, or the answer is not HTTP/1.1), `TLSError` (a certificate refused, by either
side), `LocalProtocolError` (a header value with a
line break in it).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator

from guardrail.sidecar.connection import Connection, NothingSent, expire
from guardrail.sidecar.connection import Headers as Headers  # the client's types, where its users look
from guardrail.sidecar.connection import Timeout as Timeout
from guardrail.sidecar.errors import (
    ConnectError,
    ConnectTimeout,
    LocalProtocolError,
    PoolTimeout,
    ReadError,
    RemoteProtocolError,
    TLSError,
    WriteError,
)
from guardrail.sidecar.tls import describe_tls_error

# RFC 9110 §9.2.2: a proxy must not retry other methods on its own.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# Seconds a connection may sit idle before it is closed rather than reused: less than the 5 s after
# which uvicorn, Node and others close theirs, so that a request rarely meets a connection just closing.
IDLE_EXPIRY = 4.0


class ConnectionPool:
    """Keep-alive connections to one `host:port` (TLS when `tls` is given), at most `max_connections`
    at once, of which at most `max_idle` are kept waiting for the next request. `timeout`: connect,
    read (for the answer, and between two pieces of it), write, and pool (waiting for a connection)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: Timeout,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        max_connections: int = 100,
        max_idle: int = 20,
        idle_expiry: float = IDLE_EXPIRY,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.tls = tls
        self.server_name = (server_name or host) if tls else None  # verified in its certificate, sent in SNI
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.idle_expiry = idle_expiry
        self.closed = False
        self._idle: list[Connection] = []  # the most recently used last: taken first, while warm
        self._open: set[Connection] = set()
        self._slot_waiters: deque[asyncio.Future[bool]] = deque()

    async def request(
        self, method: bytes, target: bytes, headers: Headers, body: AsyncIterable[bytes] | None = None
    ) -> Response:
        """Send a request and wait for the head of its answer. `headers` must name the `Host`; with a
        `body` and no `Content-Length` among them, the body goes chunked. The answer's body is read
        from the `Response`, which must be closed (`aclose`) to give its connection back."""
        chunked = body is not None and not _has_content_length(headers)
        head = _request_head(method, target, headers, chunked)
        may_retry = body is None and method in IDEMPOTENT
        while True:
            connection = await self._acquire()
            try:
                await connection.send(head, body, chunked)
                await connection.receive_head()
            except NothingSent:
                self._close(connection)
                if connection.reused:
                    continue  # a kept-alive connection the upstream had closed: try another one
                raise WriteError("the upstream closed the connection before the request went out") from None
            except BaseException as exc:
                self._close(connection)
                if may_retry and connection.reused and not connection.received and _is_hang_up(exc):
                    continue  # the same, seen only once the request had gone out
                raise
            return Response(self, connection)

    async def aclose(self) -> None:
        """Close every connection, idle or in use, and refuse new requests."""
        self.closed = True
        connections = [connection for connection in self._open if connection.transport is not None]
        for connection in list(self._open):
            self._close(connection)
        for waiter in self._slot_waiters:
            if not waiter.done():
                waiter.set_result(False)
        if connections:
            await asyncio.wait([connection.lost_future for connection in connections], timeout=1.0)

    async def __aenter__(self) -> ConnectionPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- connections ------------------------------------------------------------------------------

    async def _acquire(self) -> Connection:
        loop = asyncio.get_running_loop()
        while True:
            if self.closed:
                raise RuntimeError("the connection pool is closed")
            while self._idle:
                connection = self._idle.pop()
                connection.idle = False
                if loop.time() - connection.idle_since < self.idle_expiry and not connection.has_unread_bytes():
                    connection.reused = True
                    return connection
                self._close(connection)
            if len(self._open) < self.max_connections:
                return await self._connect(loop)
            await self._wait_for_slot(loop)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> Connection:
        connection = Connection(self)
        self._open.add(connection)
        try:
            async with asyncio.timeout(self.timeout.connect):
                await loop.create_connection(
                    lambda: connection,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.server_name,
                )
        except BaseException as exc:
            self._open.discard(connection)
            self._notify()
            if isinstance(exc, TimeoutError):
                raise ConnectTimeout(f"no connection to {self.host}:{self.port} in time") from None
            if isinstance(exc, ssl.SSLError):
                raise TLSError(f"no TLS with {self.host}:{self.port}: {describe_tls_error(exc)}") from None
            if isinstance(exc, OSError):
                raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
            raise
        return connection

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop) -> None:
        waiter: asyncio.Future[bool] = loop.create_future()
        self._slot_waiters.append(waiter)
        timer = None if self.timeout.pool is None else loop.call_later(self.timeout.pool, expire, waiter)
        try:
            expired = await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._slot_waiters:
                self._slot_waiters.remove(waiter)
        if expired:
            raise PoolTimeout(f"all {self.max_connections} connections to the upstream stayed busy")

    def _notify(self) -> None:
        """A connection or a slot for one is free: the first request waiting for one gets it."""
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)
                return

    def _release(self, connection: Connection) -> None:
        if connection.reusable() and not self.closed and len(self._idle) < self.max_idle:
            connection.parser = None
            if not connection.reading and connection.transport is not None:
                connection.reading = True  # so that the upstream hanging up is seen while it waits
                connection.transport.resume_reading()
            connection.idle = True
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
            self._notify()
        else:
            self._close(connection)

    def _close(self, connection: Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            if connection.idle:
                connection.idle = False
                self._idle.remove(connection)
            if connection.transport is not None:
                connection.transport.close()
            self._notify()


class Response:
    """The head of an answer (`status`, `headers` as received); its body comes from `read()` or
    `async for`, and `aclose()` gives the connection back (reading to the end does too)."""

    __slots__ = ("_connection", "_pool", "headers", "status")

    def __init__(self, pool: ConnectionPool, connection: Connection) -> None:
        self._pool = pool
        self._connection: Connection | None = connection
        self.status = connection.status
        self.headers = connection.headers

    @property
    def done(self) -> bool:
        """Whether the whole body has been read (or the response closed)."""
        return self._connection is None

    async def read(self) -> bytes:
        """The next piece of the body, as much as has come; b"" at its end."""
        connection = self._connection
        if connection is None:
            return b""
        piece = await connection.read()
        if connection.complete and not connection.pieces:  # all read: the connection can serve another
            self._connection = None
            self._pool._release(connection)
        return piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while piece := await self.read():
            yield piece

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool._release(connection)


def _is_hang_up(error: BaseException) -> bool:
    return isinstance(error, (RemoteProtocolError, ReadError, WriteError))


def _has_content_length(headers: Headers) -> bool:
    return any(name.lower() == b"content-length" for name, _ in headers)


def _request_head(method: bytes, target: bytes, headers: Headers, chunked: bool) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (method, target)]
    lines += [name + b": " + value for name, value in headers]
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    lines += (b"", b"")
    head = b"\r\n".join(lines)
    # One count over the whole head: a line break inside a value would start a header (or a
    # request) of its own on the upstream's side.
    if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
        raise LocalProtocolError("a header or the request target holds a line break")
    return head
