"""The sidecar's proxied traffic in its metrics (docs/operations.md#metrics):
`guardrail_upstream_requests_total{route,status_class}` and `guardrail_upstream_seconds{route}`, with the policy's
route template or `other` as the route, never the raw path."""

from __future__ import annotations

import asyncio

import httpx

from guardrail.metrics import STATUS_CLASSES
from tests.sidecar.conftest import Running, StartSidecar
from tests.sidecar.servers import HOST, Scripted, free_port, scripted

ALICE = {"x-user-id": "alice"}


def requests(sidecar: Running, route: str, status_class: str) -> float:
    sidecar.app.middleware.metrics.tally.flush()
    return sidecar.value("guardrail_upstream_requests_total", route=route, status_class=status_class)


def upstream_seconds(sidecar: Running, route: str, suffix: str, **labels: str) -> float:
    sidecar.app.middleware.metrics.tally.flush()
    return sidecar.value(f"guardrail_upstream_seconds{suffix}", route=route, **labels)


async def answer_with_the_status_in_the_path(
    server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """`GET /status/503[/...]` gets a 503; any other path a 200 with a JSON list of no items."""
    while head := await server.read_head(reader):
        path = head.split(b" ", 2)[1]
        status = path.split(b"/")[2] if path.startswith(b"/status/") else b"200"
        writer.write(
            b'HTTP/1.1 %s Whatever\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"items":[]}' % status
        )
        await writer.drain()


async def test_requests_are_counted_by_route_template_and_status_class(start_sidecar: StartSidecar) -> None:
    async with scripted(answer_with_the_status_in_the_path) as upstream:
        sidecar = await start_sidecar(upstream.url)
        async with httpx.AsyncClient(base_url=sidecar.url) as client:
            for path in ("/recommendations", "/feed/one", "/feed/two", "/anything", "/status/301", "/status/404"):
                await client.get(path, headers=ALICE)
            for user in range(20):  # raw paths, as many as anyone sends: one label value between them
                await client.get(f"/status/503/user-{user}", headers=ALICE)
            await client.get("/status/500", headers=ALICE)
            exposition = (await client.get("/metrics")).text

    assert requests(sidecar, "/recommendations", "2xx") == 1
    assert requests(sidecar, "/feed/*", "2xx") == 2  # the policy's template, not the path that came
    assert requests(sidecar, "other", "2xx") == 1
    assert requests(sidecar, "other", "3xx") == 1
    assert requests(sidecar, "other", "4xx") == 1
    assert requests(sidecar, "other", "5xx") == 21
    assert upstream_seconds(sidecar, "other", "_count") == 24
    assert upstream_seconds(sidecar, "/feed/*", "_count") == 2
    assert "user-" not in exposition and "/status/" not in exposition
    # Every usual class of a route seen is there from its first request, at 0.
    for status_class in STATUS_CLASSES:
        assert f'guardrail_upstream_requests_total{{route="/recommendations",status_class="{status_class}"}}' in (
            exposition
        )


async def test_a_guarded_route_answered_non_personalized_counts_under_its_own_template(
    start_sidecar: StartSidecar,
) -> None:
    sidecar = await start_sidecar()
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        response = await client.get("/recommendations", headers={"sec-gpc": "1"})  # anonymous: rewritten
    assert response.status_code == 200
    assert requests(sidecar, "/recommendations", "2xx") == 1
    assert requests(sidecar, "other", "2xx") == 0


async def test_no_answer_counts_as_error_on_its_route(start_sidecar: StartSidecar) -> None:
    sidecar = await start_sidecar(f"http://{HOST}:{free_port()}")  # nothing listens there
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        assert (await client.get("/recommendations", headers=ALICE)).status_code == 502
        assert (await client.get("/anything")).status_code == 502
    assert requests(sidecar, "/recommendations", "error") == 1
    assert requests(sidecar, "other", "error") == 1
    assert requests(sidecar, "other", "5xx") == 0  # the sidecar's own 502 is not the upstream's
    assert upstream_seconds(sidecar, "other", "_count") == 1


async def test_a_timeout_counts_as_error_and_its_time_as_the_upstreams(start_sidecar: StartSidecar) -> None:
    sidecar = await start_sidecar(upstream_timeout=0.3)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        assert (await client.get("/slow")).status_code == 504
    assert requests(sidecar, "other", "error") == 1
    assert upstream_seconds(sidecar, "other", "_bucket", le="0.25") == 0  # it waited the whole timeout
    assert upstream_seconds(sidecar, "other", "_count") == 1
    assert upstream_seconds(sidecar, "other", "_sum") >= 0.3


async def test_the_upstreams_time_is_what_it_took_to_answer(start_sidecar: StartSidecar) -> None:
    async def slow_then_answer(server: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_head(reader):
            await asyncio.sleep(0.3)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async with scripted(slow_then_answer) as upstream:
        sidecar = await start_sidecar(upstream.url)
        async with httpx.AsyncClient(base_url=sidecar.url) as client:
            assert (await client.get("/anything")).text == "ok"
    assert upstream_seconds(sidecar, "other", "_bucket", le="0.25") == 0
    assert upstream_seconds(sidecar, "other", "_count") == 1
    assert upstream_seconds(sidecar, "other", "_sum") >= 0.3
