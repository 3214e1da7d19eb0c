"""The sidecar's HTTP/1.1 client (`guardrail.sidecar.http1.ConnectionPool`) against real servers on real
sockets: body framings, keep-alive reuse and when a connection is not reused, retries, errors, limits."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from guardrail.sidecar.errors import ConnectError, LocalProtocolError, PoolTimeout, ReadTimeout, RemoteProtocolError
from guardrail.sidecar.http1 import ConnectionPool, Timeout
from tests.sidecar.servers import HOST, RecordingUpstream, Scripted, answer_each, free_port, scripted

TIMEOUT = Timeout(5.0)
POOL_TIMEOUT = Timeout(5.0, pool=0.2)


def pool_for(
    server: Scripted | RecordingUpstream, timeout: Timeout = TIMEOUT, max_connections: int = 100
) -> ConnectionPool:
    return ConnectionPool(HOST, server.port, timeout=timeout, max_connections=max_connections)


async def fetch(pool: ConnectionPool, method: bytes = b"GET", target: bytes = b"/", body: bytes | None = None) -> bytes:
    headers = [(b"host", b"upstream")]
    if body is not None:
        headers.append((b"content-length", str(len(body)).encode()))
    response = await pool.request(method, target, headers, _once(body) if body is not None else None)
    try:
        return b"".join([piece async for piece in response])
    finally:
        await response.aclose()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def test_a_kept_alive_connection_serves_request_after_request() -> None:
    async with scripted(answer_each) as server, pool_for(server) as pool:
        assert [await fetch(pool) for _ in range(3)] == [b"hello"] * 3
    assert (server.connections, len(server.heads)) == (1, 3)


async def test_a_chunked_answer_arrives_whole_and_the_connection_is_reused() -> None:
    async def chunked(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_head(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            writer.write(b"6\r\n world\r\n0\r\nx-trailer: not passed on\r\n\r\n")

    async with scripted(chunked) as server, pool_for(server) as pool:
        response = await pool.request(b"GET", b"/", [(b"host", b"upstream")])
        assert b"".join([piece async for piece in response]) == b"hello world"
        assert response.headers == [(b"transfer-encoding", b"chunked")]
        assert await fetch(pool) == b"hello world"
    assert server.connections == 1


async def test_an_answer_ended_by_closing_the_connection_is_whole_and_the_next_request_connects_again() -> None:
    async def until_close(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"this")

    async with scripted(until_close) as server, pool_for(server) as pool:
        assert await fetch(pool) == b"all of this"
        assert await fetch(pool) == b"all of this"
    assert server.connections == 2


async def test_interim_answers_are_skipped_and_head_204_304_have_no_body() -> None:
    async def various(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await server.read_head(reader):
            if head.startswith(b"GET /interim"):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n")
                await writer.drain()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-final: yes\r\n\r\nfinal")
            elif head.startswith(b"HEAD"):  # the length of the body a GET would get, and no body
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            else:  # /204, /304: a length, which is not that of a body
                status = head.split(b" ")[1][1:]
                writer.write(b"HTTP/1.1 %s Nothing\r\ncontent-length: 7\r\n\r\n" % status)
            await writer.drain()

    async with scripted(various) as server, pool_for(server) as pool:
        response = await pool.request(b"GET", b"/interim", [(b"host", b"upstream")])
        assert (response.status, response.headers) == (200, [(b"content-length", b"5"), (b"x-final", b"yes")])
        assert await response.read() == b"final"
        await response.aclose()
        assert await fetch(pool, b"HEAD") == b""
        assert await fetch(pool, target=b"/204") == b""
        assert await fetch(pool, target=b"/304") == b""
    assert server.connections == 1  # no answer left bytes behind that the next one would have misread


async def test_request_bodies_go_with_their_length_or_chunked(upstream: RecordingUpstream) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"chunked "
        yield b""
        yield b"body"

    async with pool_for(upstream) as pool:
        assert orjson.loads(await fetch(pool, b"POST", b"/sized", b"sized body"))["body"] == "sized body"
        response = await pool.request(b"POST", b"/chunked", [(b"host", b"upstream")], pieces())
        assert orjson.loads(b"".join([piece async for piece in response]))["body"] == "chunked body"
    assert upstream.seen[0].header("content-length") == ["10"]
    assert upstream.seen[1].header("transfer-encoding") == ["chunked"]


async def test_an_answer_left_unfinished_closes_its_connection() -> None:
    async def slow_first(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await server.read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
            await writer.drain()
        await answer_each(server, reader, writer)

    async with scripted(slow_first) as server, pool_for(server) as pool:
        response = await pool.request(b"GET", b"/", [(b"host", b"upstream")])
        assert await response.read() == b"hello"
        await response.aclose()  # before the rest: that connection is out of step, and not used again
        assert await fetch(pool) == b"hello"
    assert (server.connections, len(server.heads)) == (2, 2)


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
async def test_a_connection_the_upstream_closed_while_idle_is_not_used(reset: bool) -> None:
    closed = asyncio.Event()

    async def one_each(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")  # no `connection: close`
        await writer.drain()
        if reset:
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()
            await writer.wait_closed()
        closed.set()

    async with scripted(one_each) as server, pool_for(server) as pool:
        assert await fetch(pool) == b"hello"
        await closed.wait()
        if not reset:  # (a reset is seen when the request is written: not a byte of it goes out)
            await asyncio.sleep(0.01)  # for the event loop to see the end of the connection
        assert await fetch(pool, b"POST", body=b"not idempotent, yet safe: nothing was sent") == b"hello"
    assert server.connections == 2
    assert len(server.heads) == 2


async def hang_up_on_the_second(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The first connection answers once, then reads the next request and closes without answering:
    as when an upstream closes an idle connection just as a request goes out on it."""
    first = server.connections == 1
    await server.read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
    await writer.drain()
    if first:
        await server.read_head(reader)
    else:
        await answer_each(server, reader, writer)


async def test_an_idempotent_request_on_a_connection_closed_under_it_is_sent_again_on_a_new_one() -> None:
    async with scripted(hang_up_on_the_second) as server, pool_for(server) as pool:
        assert await fetch(pool) == b"hello"
        assert await fetch(pool, target=b"/again") == b"hello"
    assert server.connections == 2
    assert [head.split(b"\r\n")[0] for head in server.heads] == [
        b"GET / HTTP/1.1",
        b"GET /again HTTP/1.1",  # lost with the first connection
        b"GET /again HTTP/1.1",
    ]


async def test_a_request_with_a_body_is_not_sent_twice() -> None:
    async with scripted(hang_up_on_the_second) as server, pool_for(server) as pool:
        assert await fetch(pool) == b"hello"
        with pytest.raises(RemoteProtocolError, match="without answering"):
            await fetch(pool, b"PUT", body=b"the upstream may have acted on this")
    assert server.connections == 1


async def test_an_answer_that_began_is_not_asked_for_again() -> None:
    async def break_off(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        await writer.drain()
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe")

    async with scripted(break_off) as server, pool_for(server) as pool:
        assert await fetch(pool) == b"hello"
        with pytest.raises(RemoteProtocolError, match="before the end of its answer"):
            await fetch(pool)
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"this is not HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nnot hex\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    ],
)
async def test_a_malformed_answer_is_a_protocol_error(answer: bytes) -> None:
    async def malformed(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()  # and wait for the client to hang up

    async with scripted(malformed) as server, pool_for(server) as pool:
        with pytest.raises(RemoteProtocolError, match=r"not valid HTTP/1\.1"):
            await fetch(pool)
    assert server.connections == 1


async def test_a_header_value_with_a_line_break_is_refused_before_sending() -> None:
    async with scripted(answer_each) as server, pool_for(server) as pool:
        with pytest.raises(LocalProtocolError, match="line break"):
            await pool.request(b"GET", b"/", [(b"host", b"upstream\r\nx-injected: 1")])
    assert server.connections == 0


async def test_an_upstream_too_slow_to_answer_or_between_pieces_times_out() -> None:
    async def slow(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await server.read_head(reader)
        if head.startswith(b"GET /pieces"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst")
            await writer.drain()
        await reader.read()

    async with scripted(slow) as server, pool_for(server, Timeout(0.2)) as pool:
        with pytest.raises(ReadTimeout):
            await pool.request(b"GET", b"/", [(b"host", b"upstream")])
        response = await pool.request(b"GET", b"/pieces", [(b"host", b"upstream")])
        assert await response.read() == b"first"
        with pytest.raises(ReadTimeout):
            await response.read()
        await response.aclose()


async def test_an_upstream_that_refuses_connections_is_a_connect_error() -> None:
    async with ConnectionPool(HOST, free_port(), timeout=TIMEOUT) as pool:
        with pytest.raises(ConnectError):
            await pool.request(b"GET", b"/", [(b"host", b"upstream")])


async def test_requests_beyond_the_connection_limit_wait_for_a_free_one_and_not_forever() -> None:
    async with scripted(answer_each) as server, pool_for(server, POOL_TIMEOUT, max_connections=1) as pool:
        first = await pool.request(b"GET", b"/", [(b"host", b"upstream")])
        with pytest.raises(PoolTimeout):
            await pool.request(b"GET", b"/", [(b"host", b"upstream")])
        waiting = asyncio.create_task(fetch(pool))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert await first.read() == b"hello"  # read to its end: its connection is free again
        assert await waiting == b"hello"
    assert server.connections == 1


async def test_closing_the_pool_closes_its_connections() -> None:
    hung_up = asyncio.Event()

    async def watch(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_each(server, reader, writer)
        hung_up.set()

    async with scripted(watch) as server:
        pool = pool_for(server)
        assert await fetch(pool) == b"hello"
        await pool.aclose()
        await asyncio.wait_for(hung_up.wait(), 5)
        with pytest.raises(RuntimeError, match="closed"):
            await fetch(pool)


async def test_an_upstream_behind_tls_is_spoken_to_over_tls(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder(subject_name=name, issuer_name=name, public_key=key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_side = ssl.create_default_context(cadata=pem.decode())

    async with (
        scripted(answer_each, tls=server_side) as server,
        ConnectionPool(HOST, server.port, timeout=TIMEOUT, tls=client_side) as pool,
    ):
        assert [await fetch(pool) for _ in range(2)] == [b"hello"] * 2
    assert server.connections == 1

    # And one that does not present a certificate the pool trusts is not spoken to at all.
    async with (
        scripted(answer_each, tls=server_side) as server,
        ConnectionPool(HOST, server.port, timeout=TIMEOUT, tls=ssl.create_default_context()) as pool,
    ):
        with pytest.raises(ConnectError, match="the upstream's certificate is not trusted"):
            await fetch(pool)
    assert server.heads == []
