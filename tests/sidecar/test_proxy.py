"""The sidecar's reverse proxy over real sockets: what the upstream receives, what the client gets back,
streaming both ways, and the answers when the upstream is down, slow or broken."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import httpx
import pytest

from guardrail.sidecar.proxy import BUFFERED_BODY
from tests.sidecar.conftest import StartSidecar
from tests.sidecar.servers import (
    DEADLINE,
    HOST,
    STATIC_GZIP,
    RecordingUpstream,
    Scripted,
    answer_each,
    free_port,
    scripted,
)

ALICE = {"x-user-id": "alice"}


async def test_the_upstream_gets_the_request_without_hop_by_hop_headers_and_with_forwarding_ones(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        response = await client.post(
            "/things/a%2Fb?x=1&y=%C3%A9",
            content=b"hello upstream",
            headers={
                "connection": "keep-alive, x-hop",
                "x-hop": "named by Connection",
                "keep-alive": "timeout=5",
                "te": "trailers",
                "proxy-authorization": "Basic c2VjcmV0",
                "x-forwarded-for": "203.0.113.9",
                "x-app": "kept",
            },
        )
    seen = upstream.seen[-1]
    assert (seen.method, seen.path, seen.query, seen.body) == (
        "POST",
        "/things/a/b",
        b"x=1&y=%C3%A9",
        b"hello upstream",
    )
    names = {name for name, _ in seen.headers}
    assert not names & {"x-hop", "keep-alive", "te", "proxy-authorization", "transfer-encoding", "upgrade"}
    assert seen.header("connection") in ([], ["keep-alive"])  # the proxy's own connection to the upstream, if any
    assert seen.header("x-app") == ["kept"]
    assert seen.header("host") == [f"{HOST}:{upstream.port}"]
    assert seen.header("x-forwarded-host") == [sidecar.url.removeprefix("http://")]
    assert seen.header("x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert seen.header("x-forwarded-proto") == ["http"]

    # And back: the upstream's status, cookies and headers, less its hop-by-hop ones, Date and Server.
    assert response.status_code == 201
    assert response.json() == {"path": "/things/a/b", "body": "hello upstream"}
    assert response.headers["x-kept"] == "yes"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/; SameSite=lax", "b=2; Path=/; SameSite=lax"]
    for hop in ("x-private", "keep-alive", "proxy-authenticate", "server"):
        assert hop not in response.headers
    assert len(response.headers.get_list("date")) == 1


@pytest.mark.parametrize(("trusted", "proto"), [(["127.0.0.1/32"], "https"), (["10.0.0.0/8"], "http")])
async def test_x_forwarded_proto_from_a_trusted_proxy_is_kept_and_from_anyone_else_replaced(
    start_sidecar: StartSidecar, upstream: RecordingUpstream, trusted: list[str], proto: str
) -> None:
    sidecar = await start_sidecar(identity={"source": "header", "header": "x-user-id", "trusted_proxies": trusted})
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        await client.get("/anything", headers={"x-forwarded-proto": "https", "x-forwarded-host": "shop.example"})
    seen = upstream.seen[-1]
    assert seen.header("x-forwarded-proto") == [proto]
    assert seen.header("x-forwarded-host") == (["shop.example"] if proto == "https" else [sidecar.url[7:]])


async def test_a_compressed_body_passes_through_byte_for_byte(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar()
    async with (
        httpx.AsyncClient(base_url=sidecar.url) as client,
        client.stream("GET", "/static/gzip", headers={"accept-encoding": "gzip"}) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert raw == STATIC_GZIP
    assert upstream.seen[-1].header("accept-encoding") == ["gzip"]


async def test_a_compressed_guarded_body_is_checked_and_stays_compressed(start_sidecar: StartSidecar) -> None:
    sidecar = await start_sidecar()
    async with (
        httpx.AsyncClient(base_url=sidecar.url) as client,
        client.stream("GET", "/feed/gzip", headers={**ALICE, "accept-encoding": "gzip"}) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)
    body = httpx.Response(200, content=gzip.decompress(raw)).json()
    assert body["guardrail"]["policy"] == "test-policy"
    assert response.headers["guardrail-hidden"] == str(body["guardrail"]["hidden"])


async def test_the_response_streams_as_the_upstream_sends_it(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client, client.stream("GET", "/stream") as response:
        chunks = response.aiter_raw()
        # The upstream holds its second part back until the first has reached us: a proxy that
        # buffered the body would wait forever here.
        async with asyncio.timeout(DEADLINE):
            first = await anext(chunks)
        upstream.gate.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert first == b"first;"
    assert rest == b"second"
    assert "content-length" not in response.headers


async def test_the_request_body_streams_to_the_upstream_as_the_client_sends_it(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * (BUFFERED_BODY + 1)  # past what is read ahead before the upstream is asked
        # The second part is sent only once the upstream has the first: a buffering proxy never passes it on.
        assert await asyncio.to_thread(upstream.uploading.wait, DEADLINE), "the upstream never got the first part"
        yield b"part two"

    async with httpx.AsyncClient(base_url=sidecar.url, timeout=DEADLINE) as client:
        response = await client.post("/upload", content=body())
    assert response.status_code == 200
    assert response.json()["chunks"] >= 2


async def test_a_small_request_body_sent_chunked_reaches_the_upstream_whole_with_its_length(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar()

    async def body() -> AsyncIterator[bytes]:
        yield b"part one;"
        yield b"part two"

    async with httpx.AsyncClient(base_url=sidecar.url, timeout=DEADLINE) as client:
        response = await client.post("/things", content=body())
    assert response.json()["body"] == "part one;part two"
    assert upstream.seen[-1].header("content-length") == ["17"]
    assert upstream.seen[-1].header("transfer-encoding") == []


async def test_a_client_that_goes_away_ends_an_endless_stream_upstream(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client, client.stream("GET", "/endless") as response:
        assert (await anext(response.aiter_raw())).startswith(b"data: tick")
    # The client closed its connection: the sidecar stops reading, and the upstream sees it leave.
    assert await asyncio.to_thread(upstream.stream_closed.wait, DEADLINE)


async def test_an_upstream_that_is_down_answers_502_problem_json_counted(start_sidecar: StartSidecar) -> None:
    closed_port = free_port()
    sidecar = await start_sidecar(f"http://{HOST}:{closed_port}")
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        unguarded = await client.get("/anything")
        guarded = await client.get("/recommendations", headers=ALICE)
        ready = await client.get("/guardrail/readyz")
        exposition = (await client.get("/metrics")).text

    for response in (unguarded, guarded):
        assert response.status_code == 502
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["title"] == "Bad Gateway"
        assert "could not be reached" in problem["detail"]
        assert str(closed_port) not in response.text and "Error" not in response.text
    assert sidecar.value("guardrail_upstream_errors_total", kind="connect") == 2
    sidecar.app.middleware.metrics.tally.flush()
    assert sidecar.value("guardrail_requests_total", route="/recommendations", outcome="upstream_error") == 1
    assert sidecar.value("guardrail_upstream_bodies_total", kind="error_status") == 0  # there was no upstream body

    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "policy": "test-policy",
        "store": "ok",
        "upstream": "error: the upstream cannot be reached",
    }
    assert 'guardrail_upstream_errors_total{kind="connect"} 2.0' in exposition


async def test_readiness_includes_a_reachable_upstream(start_sidecar: StartSidecar) -> None:
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        ready = await client.get("/guardrail/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "policy": "test-policy", "store": "ok", "upstream": "ok"}


async def test_an_upstream_too_slow_answers_504_problem_json_counted(start_sidecar: StartSidecar) -> None:
    sidecar = await start_sidecar(upstream_timeout=0.2)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        response = await client.get("/slow")
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith("The service behind the guardrail did not answer within 0.2 seconds.")
    assert sidecar.value("guardrail_upstream_errors_total", kind="timeout") == 1


@pytest.fixture
async def broken_upstream(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A TCP server that answers every request with `request.param` and hangs up."""
    answer: bytes = request.param

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    async with server:
        yield f"http://{HOST}:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize("broken_upstream", [b"this is not HTTP\r\n\r\n"], indirect=True)
async def test_an_upstream_speaking_nonsense_answers_502(start_sidecar: StartSidecar, broken_upstream: str) -> None:
    sidecar = await start_sidecar(broken_upstream)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        response = await client.get("/anything")
    assert response.status_code == 502
    assert "broke off its answer" in response.json()["detail"]
    assert sidecar.value("guardrail_upstream_errors_total", kind="protocol") == 1


@pytest.mark.parametrize(
    "broken_upstream",
    [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nonly this"],
    indirect=True,
)
async def test_an_answer_that_breaks_off_reaches_the_client_broken_not_truncated(
    start_sidecar: StartSidecar, broken_upstream: str
) -> None:
    sidecar = await start_sidecar(broken_upstream)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/anything")
    assert sidecar.value("guardrail_upstream_errors_total", kind="interrupted") == 1


async def test_an_answer_that_stalls_midway_is_cut_once_the_timeout_passes(start_sidecar: StartSidecar) -> None:
    async def stall(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nthe first part")
        await writer.drain()
        await reader.read()  # and nothing more

    async with scripted(stall) as upstream:
        sidecar = await start_sidecar(upstream.url, upstream_timeout=0.2)
        async with httpx.AsyncClient(base_url=sidecar.url) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/anything")
    assert sidecar.value("guardrail_upstream_errors_total", kind="interrupted") == 1


async def test_requests_share_kept_alive_connections_to_the_upstream(start_sidecar: StartSidecar) -> None:
    async with scripted(answer_each) as upstream:
        sidecar = await start_sidecar(upstream.url)
        async with httpx.AsyncClient(base_url=sidecar.url) as client:
            answers = [await client.get(path) for path in ("/a", "/b", "/c")]
    assert [answer.text for answer in answers] == ["hello"] * 3
    assert (upstream.connections, len(upstream.heads)) == (1, 3)
