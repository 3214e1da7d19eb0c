"""Clients that hold the sidecar's upstream connections: a request body sent a byte at a time (or not at
all), a download the client walks away from. Others still get answers; the slow client gets a 408; the
upstream stops sending to a client who has left."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from guardrail.sidecar.proxy import BUFFERED_BODY
from tests.attacks.support_transport import sidecar_before
from tests.sidecar.servers import DEADLINE, HOST, RecordingUpstream, Scripted, scripted


async def start_trickling(url: str, length: int, sent: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST announcing `length` bytes of body, of which only `sent` come; returns once the sidecar is
    reading the body (it asked for it: `100 Continue`)."""
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        b"POST /upload HTTP/1.1\r\nhost: sidecar\r\nexpect: 100-continue\r\ncontent-length: %d\r\n\r\n" % length
    )
    async with asyncio.timeout(DEADLINE):
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(sent)
    await writer.drain()
    return reader, writer


async def answer_to(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and the whole of the answer, read until the sidecar closes the connection."""
    async with asyncio.timeout(DEADLINE):
        answer = await reader.read()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_bodies_trickling_in_do_not_hold_the_upstream_connections(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream:
        async with sidecar_before(upstream.url, tmp_path, upstream_timeout=1.0, max_connections=2) as sidecar:
            slow = [await start_trickling(sidecar.url, 100, b"a few bytes") for _ in range(2)]
            try:
                async with httpx.AsyncClient(base_url=sidecar.url, timeout=DEADLINE) as client:
                    unrelated = await client.get("/anything")
                assert unrelated.status_code == 201  # the upstream's answer, not a 504: the pool had room for it
                answers = [await answer_to(reader) for reader, _ in slow]
            finally:  # (so that the sidecar can stop whatever happened)
                for _, writer in slow:
                    writer.close()
    for status, body in answers:
        assert status == 408
        assert b"did not arrive within 1 second" in body
    assert [seen.path for seen in upstream.seen] == ["/anything"]  # the slow requests were never forwarded


async def test_a_large_body_sent_too_slowly_gets_408_and_its_upstream_connection_is_closed(tmp_path: Path) -> None:
    received: list[int] = []

    async def handle(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await server.read_head(reader):
            if head.startswith(b"POST"):
                received.append(len(await reader.read()))  # until the sidecar hangs up
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()

    async with (
        scripted(handle) as upstream,
        sidecar_before(upstream.url, tmp_path, upstream_timeout=1.0, max_connections=1) as sidecar,
    ):
        reader, writer = await start_trickling(sidecar.url, 4 * BUFFERED_BODY, b"x" * (BUFFERED_BODY + 1))
        try:
            status, body = await answer_to(reader)
        finally:
            writer.close()
        async with httpx.AsyncClient(base_url=sidecar.url, timeout=DEADLINE) as client:
            after = await client.get("/anything")
    assert status == 408
    assert b"application/problem+json" not in body  # (the type is in the head; the body is the problem)
    assert b'"title":"Request Timeout"' in body
    assert received == [BUFFERED_BODY + 1]  # what came streamed on, and then the connection closed
    assert after.text == "hello"  # the only connection was free again


async def test_a_client_leaving_mid_download_stops_the_upstream_read(tmp_path: Path) -> None:
    total, piece = 64 * 1024 * 1024, b"x" * 65536
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def download(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % total)
        try:
            for _ in range(total // len(piece)):
                writer.write(piece)
                await writer.drain()
        except ConnectionError:
            ended.set_result("the sidecar hung up")
        else:
            ended.set_result("all of it was read")

    async with scripted(download) as upstream, sidecar_before(upstream.url, tmp_path) as sidecar:
        async with (
            httpx.AsyncClient(base_url=sidecar.url, timeout=DEADLINE) as client,
            client.stream("GET", "/download") as response,
        ):
            assert len(await anext(response.aiter_raw())) > 0
        # The client has closed its connection.
        async with asyncio.timeout(DEADLINE):
            assert await ended == "the sidecar hung up"
