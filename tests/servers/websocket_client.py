"""A small websocket client (wsproto over asyncio streams), enough to open a connection with chosen
headers from a chosen local address, exchange text messages, and close."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    RejectConnection,
    Request,
    TextMessage,
)

READ_SECONDS = 10.0


class WebSocket:
    def __init__(
        self, host: str, port: int, path: str, headers: list[tuple[bytes, bytes]], *, local_address: str
    ) -> None:
        self._address = (host, port, local_address)
        self._request = Request(host=f"{host}:{port}", target=path, extra_headers=headers)
        self._connection = WSConnection(ConnectionType.CLIENT)
        self._events: list[Event] = []
        self._texts: list[str] = []

    async def __aenter__(self) -> Self:
        host, port, local = self._address
        self._reader, self._writer = await asyncio.open_connection(host, port, local_addr=(local, 0))
        await self._send(self._request)
        event = await self._next((AcceptConnection, RejectConnection))
        if isinstance(event, RejectConnection):
            raise AssertionError(f"the server refused the websocket: {event.status_code}")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._writer.close()
        await self._writer.wait_closed()

    async def send_text(self, text: str) -> None:
        await self._send(TextMessage(data=text))

    async def receive_text(self) -> str:
        parts: list[str] = []
        while True:
            event = await self._next((TextMessage,))
            assert isinstance(event, TextMessage)
            parts.append(str(event.data))
            if event.message_finished:
                return "".join(parts)

    async def closed_by_server(self) -> int:
        """Wait for the server's close, answer it, and return its code."""
        event = await self._next((CloseConnection,))
        assert isinstance(event, CloseConnection)
        await self._send(event.response())
        return event.code

    async def _send(self, event: Event) -> None:
        self._writer.write(self._connection.send(event))
        await self._writer.drain()

    async def _next(self, kinds: tuple[type[Event], ...]) -> Event:
        while True:
            while self._events:
                event = self._events.pop(0)
                if isinstance(event, kinds):
                    return event
                raise AssertionError(f"expected {kinds}, the server sent {event!r}")
            data = await asyncio.wait_for(self._reader.read(65536), READ_SECONDS)
            if not data:
                raise AssertionError(f"the server closed the connection while {kinds} were expected")
            self._connection.receive_data(data)
            self._events.extend(self._connection.events())
