"""The middleware's ASGI behaviours under each server a user may run it with (tests/servers/processes.py):
streaming passthrough, lifespan, gzip, HEAD and websockets, over real sockets, each server started once.

The service (tests/servers/apps/guarded_service.py) trusts 127.0.0.2 as its proxy; the tests connect
from 127.0.0.1 (an untrusted peer) unless they say otherwise. Hypercorn and Granian are asked for h2c
too: HTTP/2 with prior knowledge on the same cleartext port. A websocket is an HTTP/1.1 upgrade, so the
h2c servers get theirs over HTTP/1.1.
"""

from __future__ import annotations

import gzip
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.servers.processes import SERVERS, Server, ServerProcess
from tests.servers.websocket_client import WebSocket
from tests.sidecar.servers import HOST, write_policy

TRUSTED_PROXY = "127.0.0.2"
UNTRUSTED_PEER = "127.0.0.1"
POLICY: dict[str, Any] = {
    "mode": "enforce",
    "identity": {"source": "header", "header": "x-user-id", "trusted_proxies": [f"{TRUSTED_PROXY}/32"]},
    "routes": [
        {"path": "/recommendations", "methods": ["GET", "HEAD"], "items": "/items"},
        {"path": "/feed/*", "items": "/data/items"},
    ],
}
# What the service's items become for a caller without consent: the two that use no personal data.
KEPT = ["s1", "s2"]
# What only a trusted proxy may say, and what nobody may: the app behind the guardrail never sees the latter.
CLAIMS = [(b"x-user-id", b"alice"), (b"x-forwarded-for", b"198.51.100.7")]
NEVER = [(b"x_user_id", b"mallory"), (b"guardrail-context", b"personalized=?1")]
HARMLESS = (b"x-request-note", b"hello")


@pytest.fixture(scope="module", params=SERVERS, ids=[server.name for server in SERVERS])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server: Server = request.param
    directory = tmp_path_factory.mktemp(server.name)
    policy = write_policy(directory / "guardrail.yaml", **POLICY)
    process = ServerProcess(server, policy, directory / "events")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def client(served: ServerProcess, local_address: str = UNTRUSTED_PEER) -> httpx.AsyncClient:
    http2 = served.server.http2
    transport = httpx.AsyncHTTPTransport(http1=not http2, http2=http2, local_address=local_address)
    return httpx.AsyncClient(transport=transport, base_url=served.url, timeout=30)


@pytest.fixture
async def http(served: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with client(served) as opened:
        yield opened


def expected_version(served: ServerProcess) -> str:
    return "HTTP/2" if served.server.http2 else "HTTP/1.1"


def ids(document: Any, *pointer: str) -> list[str]:
    for key in pointer:
        document = document[key]
    return [entry["id"] for entry in document]


def events(served: ServerProcess) -> list[str]:
    return served.events.read_text(encoding="utf-8").split() if served.events.exists() else []


# -- lifespan ------------------------------------------------------------------------------------


async def test_the_apps_startup_runs_through_the_middleware(served: ServerProcess, http: httpx.AsyncClient) -> None:
    response = await http.get("/lifespan")
    assert response.json()["started"] == ["startup"], served.output()
    assert events(served) == ["startup", str(response.json()["pid"])]


# -- streaming -----------------------------------------------------------------------------------


async def test_an_unguarded_stream_arrives_event_by_event(served: ServerProcess, http: httpx.AsyncClient) -> None:
    token = uuid.uuid4().hex
    received = b""
    async with http.stream("GET", "/stream", params={"token": token}) as response:
        assert response.http_version == expected_version(served)
        assert not [name for name in response.headers if name.startswith("guardrail-")]
        chunks = response.aiter_raw()
        while b'"one"' not in received:
            received += await anext(chunks)
        # The app sends its second event only once told that the first one arrived.
        assert (await http.get("/stream/release", params={"token": token})).status_code == 204
        async for chunk in chunks:
            received += chunk
    assert b'"late"' not in received, "the first event was held back until the stream gave up waiting"
    assert received == b'data: "one"\n\ndata: "two"\n\n'


# -- gzip ----------------------------------------------------------------------------------------


async def test_a_gzip_upstream_body_is_checked_and_sent_gzip(served: ServerProcess, http: httpx.AsyncClient) -> None:
    async with http.stream("GET", "/recommendations", headers={"accept-encoding": "gzip"}) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.status_code == 200, served.output()
    assert response.http_version == expected_version(served)
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)
    assert response.headers["guardrail-hidden"] == "2"
    assert ids(orjson.loads(gzip.decompress(raw)), "items") == KEPT


@pytest.mark.parametrize("accept_encoding", ["gzip", "identity"])
async def test_gzip_middleware_outside_compresses_the_checked_page(
    served: ServerProcess, http: httpx.AsyncClient, accept_encoding: str
) -> None:
    async with http.stream("GET", "/feed/plain", headers={"accept-encoding": accept_encoding}) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.status_code == 200, served.output()
    assert response.headers["guardrail-hidden"] == "2"
    if accept_encoding == "gzip":
        assert response.headers["content-encoding"] == "gzip"
        raw = gzip.decompress(raw)
    else:
        assert "content-encoding" not in response.headers
    assert ids(orjson.loads(raw), "data", "items") == KEPT


# -- HEAD ----------------------------------------------------------------------------------------


async def test_head_on_a_guarded_route_has_the_headers_no_body_and_private_caching(
    request: pytest.FixtureRequest, served: ServerProcess, http: httpx.AsyncClient
) -> None:
    if served.server.name == "granian-h2c":
        # Granian sends a HEAD answer's body as DATA frames over HTTP/2, which an HTTP/2 client refuses
        # (RFC 9113 §8.1.1); over HTTP/1.1 it drops the body. docs/integrate.md, "Servers".
        request.applymarker(pytest.mark.xfail(raises=httpx.ProtocolError, strict=True))
    get = await http.get("/recommendations")
    head = await http.head("/recommendations")
    assert head.status_code == 200, served.output()
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
    assert head.headers["cache-control"] == get.headers["cache-control"] == "private, no-store"


# -- websockets ----------------------------------------------------------------------------------


def screened(seen: dict[str, Any]) -> set[bytes]:
    names = {name.encode() for name, _ in seen["headers"]}
    return names & {name for name, _ in [*CLAIMS, *NEVER, HARMLESS]}


@pytest.mark.parametrize("peer", [UNTRUSTED_PEER, TRUSTED_PROXY])
async def test_a_websocket_passes_through_with_its_headers_screened_as_on_http(
    served: ServerProcess, peer: str
) -> None:
    sent = [*CLAIMS, *NEVER, HARMLESS]
    async with WebSocket(HOST, served.port, "/ws", sent, local_address=peer) as websocket:
        over_websocket = orjson.loads(await websocket.receive_text())
        await websocket.send_text("hello")
        assert await websocket.receive_text() == "hello"
        assert await websocket.closed_by_server() == 1000
    async with client(served, local_address=peer) as http:
        over_http = (await http.get("/headers", headers=[(name, value) for name, value in sent])).json()
    allowed = {HARMLESS[0]} | ({name for name, _ in CLAIMS} if peer == TRUSTED_PROXY else set())
    assert screened(over_websocket) == screened(over_http) == allowed
    if peer == TRUSTED_PROXY:
        assert over_websocket["client"] == over_http["client"] == TRUSTED_PROXY


# -- shutdown: last, as it stops the server ------------------------------------------------------


def test_the_apps_shutdown_runs_through_the_middleware_on_sigterm(served: ServerProcess) -> None:
    code = served.stop()
    # uvicorn re-raises the signal once it has shut down cleanly; the others exit 0.
    assert code in (0, -signal.SIGTERM), served.output()
    pid = events(served)[1]
    assert events(served) == ["startup", pid, "shutdown", pid], served.output()
