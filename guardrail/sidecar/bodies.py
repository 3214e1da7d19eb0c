"""The bodies that pass through `ReverseProxy` while the client is there: the client's request body,
read ahead before an upstream connection is taken (`RequestBody`), and the answer's, whose relaying
stops when its client goes away (`unless_client_leaves`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from starlette.types import Message, Receive

from guardrail.sidecar.http1 import Headers

# An answer's body longer than this (or of unknown length) stops being read when its client goes away.
# A shorter one is read to its end even then: little to read, and the connection stays usable.
LONG_BODY = 256 * 1024


class ClientGone(Exception):
    """The client went away while its request body was being read."""


class ClientTooSlow(Exception):
    """The client did not send its whole request body in time."""


class RequestBody:
    """The client's request body as an async iterator of chunks: what was read ahead, then the rest
    from `receive` as the pool sends it. All of it must come within `seconds` of the start."""

    def __init__(self, receive: Receive, seconds: float) -> None:
        self.receive = receive
        self.deadline = asyncio.get_running_loop().time() + seconds
        self.done = False
        self.ahead: list[bytes] = []

    async def read_ahead(self, limit: int) -> int | None:
        """Read until the end of the body or past `limit` bytes: the body's size if it was all read."""
        size = 0
        while not self.done and size <= limit:
            chunk = await self._next()
            if chunk:
                self.ahead.append(chunk)
                size += len(chunk)
        return size if self.done else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.ahead:
            ahead, self.ahead = b"".join(self.ahead), []
            yield ahead
        while not self.done:
            chunk = await self._next()
            if chunk:
                yield chunk

    async def _next(self) -> bytes:
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.receive()
        except TimeoutError:
            raise ClientTooSlow from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        self.done = not message.get("more_body", False)
        chunk: bytes = message.get("body", b"")
        return chunk


async def unless_client_leaves(relaying: Coroutine[Any, Any, None], receive: Receive) -> bool:
    """Run `relaying` to its end, or until the client goes away: whether it went."""
    relay = asyncio.ensure_future(relaying)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        relay.cancel()
    if relay.done() and not relay.cancelled():
        relay.result()  # (an UpstreamInterrupted goes on up)
        return False
    return True


async def _disconnected(receive: Receive) -> None:
    message: Message = await receive()
    while message["type"] != "http.disconnect":
        message = await receive()


def is_long(headers: Headers) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return int(value) > LONG_BODY  # (the parser took only digits)
    return True
