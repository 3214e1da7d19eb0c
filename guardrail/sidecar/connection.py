"""`Connection`: one keep-alive connection of `guardrail.sidecar.http1.ConnectionPool`, an asyncio
Protocol whose answers httptools parses (llhttp, the parser uvicorn serves with) as bytes arrive.

- Bodies framed by Content-Length, chunked (trailers dropped), or the end of the connection; 1xx answers
  skipped; no body read after HEAD, 204 or 304. Request bodies go with their Content-Length, or chunked.
- Bytes nobody asked for (after a whole answer, in the same read or later, or waiting on an idle
  connection when it is taken for a request) put the connection out of step: the answer already
  complete stands, nothing after it is read as an answer, and the connection is closed. An answer
  whose framing could be read two ways (Content-Length with chunked, two lengths) is a protocol error.
- Reading pauses while more than `BUFFER_LIMIT` bytes of an answer wait to be read: a slow reader
  slows the upstream down rather than filling memory.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections import deque
from collections.abc import AsyncIterable
from typing import Protocol, cast

import httptools

from guardrail.sidecar.errors import (
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TLSError,
    UpstreamTimeout,
    WriteError,
    WriteTimeout,
)
from guardrail.sidecar.tls import describe_tls_error

BUFFER_LIMIT = 256 * 1024

Headers = list[tuple[bytes, bytes]]


class Timeout:
    """Seconds each phase of a request may take (None: no limit): `connect`, `pool` (waiting for a free
    connection), `write` (the request going out) and `read` (the answer, and each next piece of it).
    Each is `seconds` unless given."""

    __slots__ = ("connect", "pool", "read", "write")

    def __init__(
        self,
        seconds: float | None,
        *,
        connect: float | None = None,
        pool: float | None = None,
        write: float | None = None,
        read: float | None = None,
    ) -> None:
        self.connect = seconds if connect is None else connect
        self.pool = seconds if pool is None else pool
        self.write = seconds if write is None else write
        self.read = seconds if read is None else read

    def __repr__(self) -> str:
        return f"Timeout(connect={self.connect}, pool={self.pool}, write={self.write}, read={self.read})"


class Pool(Protocol):
    """What a connection needs of the pool that made it (guardrail.sidecar.http1.ConnectionPool)."""

    timeout: Timeout

    def _close(self, connection: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One connection. Parsing happens as bytes arrive (`data_received`); the request's task waits
    on `waiter` for the head, the next piece of body, or room to write."""

    def __init__(self, pool: Pool) -> None:
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
            raise NothingSent
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
            raise NothingSent
        if body is not None:
            async for piece in body:
                if piece:
                    transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n") if chunked else (piece,))
                while not self.writable and not self.lost and not self.status:
                    await self._wait(
                        self.pool.timeout.write, WriteTimeout, "the upstream did not take the request in time"
                    )
                if self.status or self.lost:
                    break  # it answered early, or hung up: the rest is not sent (nor the connection reused)
            else:
                if chunked:
                    transport.write(b"0\r\n\r\n")
                self.sent = True
            if self.lost and not self.status:
                raise self.error or WriteError("the upstream closed the connection while the request was sent")
        else:
            self.sent = True

    async def receive_head(self) -> None:
        while not self.status:
            if self.error is not None:
                raise self.error
            await self._wait(self.pool.timeout.read, ReadTimeout, "the upstream did not answer in time")

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
            await self._wait(self.pool.timeout.read, ReadTimeout, "the upstream's answer stalled")

    async def _wait(self, seconds: float | None, expired: type[UpstreamTimeout], message: str) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiter = waiter
        timer = None if seconds is None else loop.call_later(seconds, expire, waiter)
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
                self.error = RemoteProtocolError(f"the upstream's answer is not valid HTTP/1.1: {exc}")
                self._hang_up()
        if self.buffered > BUFFER_LIMIT and self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._end(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ssl.SSLError):  # an alert: with TLS 1.3 a refused client certificate shows only now
            self._end(TLSError(f"the upstream ended TLS: {describe_tls_error(exc)}"))
        else:
            self._end(ReadError(f"the connection to the upstream broke: {exc}") if exc else None)
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
                self.error = error or RemoteProtocolError(
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


class NothingSent(Exception):
    """Not a byte of the request went out: the connection was found closed."""


class _OutOfStep(Exception):
    """Raised from a parser callback to stop parsing: what follows a whole answer is not read."""


def expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)
