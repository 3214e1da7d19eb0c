"""`ConnectionPool`: the sidecar's HTTP/1.1 client to its upstream. A keep-alive pool of asyncio
Protocol connections whose answers httptools parses (llhttp, the parser uvicorn serves with).

httpx over httpcore did the same job with about 1,900 function calls a request (its pool scans every
connection twice a request); this one makes about 130, asyncio's included (benchmarks/results/clients.md).

- Bodies framed by Content-Length, chunked (trailers dropped), or the end of the connection; 1xx answers
  skipped; no body read after HEAD, 204 or 304. Request bodies go with their Content-Length, or chunked.
- A connection is reused only after an answer read to its end that did not ask to close it. One that
  the upstream closed while it sat idle is dropped. A request on a kept-alive connection that turns out
  closed goes again on another one when nothing of it went out, or when nothing of the answer came and
  the request is idempotent without a body: nothing the client sent is lost, nothing can happen twice.
- Bytes nobody asked for (after a whole answer, in the same read or later, or waiting on an idle
  connection when it is taken for a request) put the connection out of step: the answer already
  complete stands, nothing after it is read as an answer, and the connection is closed. An answer
  whose framing could be read two ways (Content-Length with chunked, two lengths) is a protocol error.
- Reading pauses while more than `BUFFER_LIMIT` bytes of an answer wait to be read: a slow reader
  slows the upstream down rather than filling memory.

Errors are httpx's own, so that callers handle one set: `ConnectError`/`ConnectTimeout` (no
connection), `PoolTimeout` (every connection busy too long), `WriteError`/`WriteTimeout` (the request
could not go out), `ReadTimeout` (no answer, or no next piece of it, in time), `ReadError` and
`RemoteProtocolError` (the connection broke, or the answer is not HTTP/1.1), `LocalProtocolError` (a
header value with a line break in it).
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import cast

import httptools
import httpx

# RFC 9110 §9.2.2: a proxy must not retry other methods on its own.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
BUFFER_LIMIT = 256 * 1024
# Seconds a connection may sit idle before it is closed rather than reused: less than the 5 s after
# which uvicorn, Node and others close theirs, so that a request rarely meets a connection just closing.
IDLE_EXPIRY = 4.0

Headers = list[tuple[bytes, bytes]]


class ConnectionPool:
    """Keep-alive connections to one `host:port` (TLS when `tls` is given), at most `max_connections`
    at once, of which at most `max_idle` are kept waiting for the next request. `timeout`: connect,
    read (for the answer, and between two pieces of it), write, and pool (waiting for a connection)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: httpx.Timeout,
        tls: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_idle: int = 20,
        idle_expiry: float = IDLE_EXPIRY,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.tls = tls
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.idle_expiry = idle_expiry
        self.closed = False
        self._idle: list[_Connection] = []  # the most recently used last: taken first, while warm
        self._open: set[_Connection] = set()
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
            except _NothingSent:
                self._close(connection)
                if connection.reused:
                    continue  # a kept-alive connection the upstream had closed: try another one
                raise httpx.WriteError("the upstream closed the connection before the request went out") from None
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

    async def _acquire(self) -> _Connection:
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

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        connection = _Connection(self)
        self._open.add(connection)
        try:
            async with asyncio.timeout(self.timeout.connect):
                await loop.create_connection(
                    lambda: connection,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except BaseException as exc:
            self._open.discard(connection)
            self._notify()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(f"no connection to {self.host}:{self.port} in time") from None
            if isinstance(exc, OSError):
                raise httpx.ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
            raise
        return connection

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop) -> None:
        waiter: asyncio.Future[bool] = loop.create_future()
        self._slot_waiters.append(waiter)
        timer = None if self.timeout.pool is None else loop.call_later(self.timeout.pool, _expire, waiter)
        try:
            expired = await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._slot_waiters:
                self._slot_waiters.remove(waiter)
        if expired:
            raise httpx.PoolTimeout(f"all {self.max_connections} connections to the upstream stayed busy")

    def _notify(self) -> None:
        """A connection or a slot for one is free: the first request waiting for one gets it."""
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)
                return

    def _release(self, connection: _Connection) -> None:
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

    def _close(self, connection: _Connection) -> None:
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

    def __init__(self, pool: ConnectionPool, connection: _Connection) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
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


class _Connection(asyncio.Protocol):
    """One connection. Parsing happens as bytes arrive (`data_received`); the request's task waits
    on `waiter` for the head, the next piece of body, or room to write."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.unread = select.poll()  # the socket, once connected: see `has_unread_bytes`
        self.lost_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost = False  # no more bytes will come
        self.idle = False
        self.idle_since = 0.0
        self.reused = False
        self.writable = True
        self.reading = True
        self.waiter: asyncio.Future[bool] | None = None
        # The exchange in progress:
        self.parser: httptools.HttpResponseParser | None = None
        self.head_only = False
        self.sent = False  # the whole request went out
        self.received = False  # some of the answer came
        self.status = 0
        self.headers: Headers = []
        self.framed = False  # by Content-Length or chunked, rather than by the end of the connection
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.error: Exception | None = None

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.sent and not self.lost

    def has_unread_bytes(self) -> bool:
        """Whether bytes (or the upstream's hang-up) wait on the socket that the event loop has not
        taken in yet. On an idle connection they are an answer nobody asked for, which would
        otherwise be read as the answer to the next request sent on it."""
        return bool(self.unread.poll(0))

    # -- the request's side -----------------------------------------------------------------------

    async def send(self, head: bytes, body: AsyncIterable[bytes] | None, chunked: bool) -> None:
        if self.lost or self.transport is None:
            raise _NothingSent
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head.startswith(b"HEAD ")
        self.sent = self.received = self.complete = self.keep_alive = self.framed = False
        self.status, self.headers, self.buffered, self.error = 0, [], 0, None
        self.pieces.clear()
        if not self.reading:
            self.reading = True
            self.transport.resume_reading()
        transport = self.transport
        transport.write(head)
        if transport.is_closing():  # the write failed at once: the upstream had hung up
            raise _NothingSent
        if body is not None:
            async for piece in body:
                if piece:
                    transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n") if chunked else (piece,))
                while not self.writable and not self.lost and not self.status:
                    await self._wait(
                        self.pool.timeout.write, httpx.WriteTimeout, "the upstream did not take the request in time"
                    )
                if self.status or self.lost:
                    break  # it answered early, or hung up: the rest is not sent (nor the connection reused)
            else:
                if chunked:
                    transport.write(b"0\r\n\r\n")
                self.sent = True
            if self.lost and not self.status:
                raise self.error or httpx.WriteError("the upstream closed the connection while the request was sent")
        else:
            self.sent = True

    async def receive_head(self) -> None:
        while not self.status:
            if self.error is not None:
                raise self.error
            await self._wait(self.pool.timeout.read, httpx.ReadTimeout, "the upstream did not answer in time")

    async def read(self) -> bytes:
        while True:
            pieces = self.pieces
            if pieces:
                piece = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
                pieces.clear()
                self.buffered = 0
                if not self.reading and not self.lost and self.transport is not None:
                    self.reading = True
                    self.transport.resume_reading()
                return piece
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait(self.pool.timeout.read, httpx.ReadTimeout, "the upstream's answer stalled")

    async def _wait(self, seconds: float | None, expired: type[httpx.TimeoutException], message: str) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiter = waiter
        timer = None if seconds is None else loop.call_later(seconds, _expire, waiter)
        try:
            timed_out = await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if timed_out:
            raise expired(message)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's are not subclasses)
        self.unread.register(transport.get_extra_info("socket").fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self.complete:
            self._out_of_step()
            return
        self.received = True
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.complete:
                self._out_of_step()  # more after the answer, in the same read
            else:
                self.error = httpx.RemoteProtocolError(f"the upstream's answer is not valid HTTP/1.1: {exc}")
                self._hang_up()
        if self.buffered > BUFFER_LIMIT and self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._end(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(httpx.ReadError(f"the connection to the upstream broke: {exc}") if exc else None)
        if not self.lost_future.done():
            self.lost_future.set_result(None)

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._wake()

    def _end(self, error: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        if self.idle:
            self.pool._close(self)
        elif self.parser is not None and not self.complete and self.error is None:
            if error is None and self.status and not self.framed:
                self.complete = True  # a body that ends with the connection: this is its end
            else:
                self.error = error or httpx.RemoteProtocolError(
                    "the upstream closed the connection before the end of its answer"
                    if self.status
                    else "the upstream closed the connection without answering"
                )
        self._wake()

    def _out_of_step(self) -> None:
        """Bytes came that nobody asked for (on an idle connection, or after a whole answer): the
        connection is out of step with the upstream. The answer already complete stands; the rest is
        never read as an answer, and the connection is closed at once rather than reused."""
        self.keep_alive = False
        if self.idle:
            self.pool._close(self)
        else:
            self._hang_up()

    def _hang_up(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.status:  # a second answer after the final one: parsing stops here
            raise _OutOfStep

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.status:
            return  # a trailer, after a chunked body: not passed on (nor are they by most proxies)
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length":
            self.framed = True
        elif lowered == b"transfer-encoding":
            # Chunked only when it is the last coding, as the parser reads it (RFC 9112 §6.3): any
            # other answer with a transfer coding ends with the connection.
            self.framed = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the final answer follows
            self.headers, self.framed = [], False
            return
        self.status = status
        if self.head_only:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.complete:  # bytes after the answer to a HEAD, which has no body
            raise _OutOfStep
        self.pieces.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.status and not self.complete:  # (not the end of a 1xx)
            assert self.parser is not None
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()


class _NothingSent(Exception):
    """Not a byte of the request went out: the connection was found closed."""


class _OutOfStep(Exception):
    """Raised from a parser callback to stop parsing: what follows a whole answer is not read."""


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


def _is_hang_up(error: BaseException) -> bool:
    return isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError))


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
        raise httpx.LocalProtocolError("a header or the request target holds a line break")
    return head
