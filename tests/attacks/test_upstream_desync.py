"""An upstream out of step with the sidecar's connection to it: a second answer (or any byte) after a
complete one, framing two parsers could read two ways, an interim answer followed by nonsense. The
answer already complete is the one used, what follows is never taken as the next answer, and the
connection is closed rather than reused; an answer whose framing is ambiguous is a 502 with nothing of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from guardrail.sidecar.http1 import ConnectionPool, Timeout
from tests.attacks.support_transport import ALICE, HIDDEN_FOR_ALICE, ITEMS_JSON, json_answer, sidecar_before
from tests.sidecar.servers import HOST, Scripted, scripted

TIMEOUT = Timeout(5.0)

AFTER_A_COMPLETE_ANSWER = {
    "a second status line": b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    "a whole second answer": json_answer(b'{"items": [], "page": 2}'),
    "an interim answer": b"HTTP/1.1 100 Continue\r\n\r\n",
    "nonsense": b"garbage\r\n\r\n",
}


def poisoned_once(extra: bytes) -> object:
    """An upstream whose first answer on its first connection comes with `extra` in the same write."""

    async def handle(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = server.connections == 1
        while await server.read_head(reader):
            writer.write(json_answer() + (extra if first else b""))
            first = False
            await writer.drain()

    return handle


@pytest.mark.parametrize("extra", AFTER_A_COMPLETE_ANSWER.values(), ids=AFTER_A_COMPLETE_ANSWER.keys())
async def test_bytes_after_a_complete_answer_neither_replace_it_nor_answer_the_next_request(
    tmp_path: Path, extra: bytes
) -> None:
    async with (
        scripted(poisoned_once(extra)) as upstream,  # type: ignore[arg-type]
        sidecar_before(upstream.url, tmp_path) as sidecar,
        httpx.AsyncClient(base_url=sidecar.url) as client,
    ):
        first = await client.get("/recommendations", headers=ALICE)
        second = await client.get("/recommendations", headers=ALICE)
    for response in (first, second):
        assert response.status_code == 200  # not the 404 that followed the 200
        assert response.headers["guardrail-mode"] == "enforce"
        assert HIDDEN_FOR_ALICE not in [item["id"] for item in response.json()["items"]]
        assert response.json()["page"] == 1  # the answer asked for, not the one after it
    assert upstream.connections == 2  # the connection out of step was closed, not reused


AMBIGUOUS_FRAMING = {
    "chunked and a length": b"transfer-encoding: chunked\r\ncontent-length: %d\r\n",
    "a length and chunked": b"content-length: %d\r\ntransfer-encoding: chunked\r\n",
    "two lengths": b"content-length: %d\r\ncontent-length: %d\r\n",
    "a list of lengths": b"content-length: %d, %d\r\n",
}


@pytest.mark.parametrize("framing", AMBIGUOUS_FRAMING.values(), ids=AMBIGUOUS_FRAMING.keys())
async def test_an_answer_with_ambiguous_framing_is_a_502_with_nothing_of_it(tmp_path: Path, framing: bytes) -> None:
    lengths = (len(ITEMS_JSON),) * framing.count(b"%d")
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + framing % lengths + b"\r\n" + ITEMS_JSON

    async def handle(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_head(reader):
            writer.write(answer)
            await writer.drain()

    async with (
        scripted(handle) as upstream,
        sidecar_before(upstream.url, tmp_path) as sidecar,
        httpx.AsyncClient(base_url=sidecar.url) as client,
    ):
        guarded = await client.get("/recommendations", headers=ALICE)
        unguarded = await client.get("/anything")
    for response in (guarded, unguarded):
        assert response.status_code == 502
        assert response.headers["content-type"] == "application/problem+json"
        assert HIDDEN_FOR_ALICE not in response.text
    assert upstream.connections == 2  # each answer closed its connection
    assert sidecar.value("guardrail_upstream_errors_total", kind="protocol") == 2


async def test_an_interim_answer_followed_by_nonsense_is_a_502(tmp_path: Path) -> None:
    async def handle(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" + ITEMS_JSON)
        await writer.drain()
        await reader.read()

    async with (
        scripted(handle) as upstream,
        sidecar_before(upstream.url, tmp_path) as sidecar,
        httpx.AsyncClient(base_url=sidecar.url) as client,
    ):
        response = await client.get("/recommendations", headers=ALICE)
    assert response.status_code == 502
    assert HIDDEN_FOR_ALICE not in response.text


# -- the connection pool on its own -----------------------------------------------------------------


async def fetch(pool: ConnectionPool, method: bytes = b"GET") -> tuple[int, bytes]:
    response = await pool.request(method, b"/", [(b"host", b"upstream")])
    try:
        return response.status, b"".join([piece async for piece in response])
    finally:
        await response.aclose()


async def test_a_body_after_an_answer_to_head_is_not_taken_as_the_next_answer() -> None:
    async def handle(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await server.read_head(reader):
            if head.startswith(b"HEAD"):  # the body a HEAD must not have, in the same write
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 25\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()

    async with scripted(handle) as server, ConnectionPool(HOST, server.port, timeout=TIMEOUT) as pool:
        assert await fetch(pool, b"HEAD") == (200, b"")
        assert await fetch(pool) == (200, b"hello")
    assert server.connections == 2


async def test_bytes_after_an_answer_still_being_read_close_its_connection() -> None:
    go, sent = asyncio.Event(), asyncio.Event()

    async def handle(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_head(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()
            if server.connections == 1:
                await go.wait()  # once the client has the head of the answer
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                sent.set()

    async with scripted(handle) as server, ConnectionPool(HOST, server.port, timeout=TIMEOUT) as pool:
        response = await pool.request(b"GET", b"/", [(b"host", b"upstream")])
        go.set()
        await sent.wait()
        assert (response.status, await response.read()) == (200, b"hello")
        await response.aclose()
        assert await fetch(pool) == (200, b"hello")
    assert server.connections == 2


@pytest.mark.parametrize("coding", [b"xchunked", b"chunked, gzip", b"gzip"])
async def test_an_answer_not_chunked_last_ends_with_its_connection(coding: bytes) -> None:
    # RFC 9112 §6.3: a response whose final transfer coding is not chunked is read until the
    # connection closes; the framing the pool assumes is the one its parser applies.
    async def handle(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: %s\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % coding)
        await writer.drain()

    async with scripted(handle) as server, ConnectionPool(HOST, server.port, timeout=TIMEOUT) as pool:
        assert await fetch(pool) == (200, b"5\r\nhello\r\n0\r\n\r\n")
        assert await fetch(pool) == (200, b"5\r\nhello\r\n0\r\n\r\n")
    assert server.connections == 2
