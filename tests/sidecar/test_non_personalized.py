"""Issue 6, point 4, in sidecar mode: when personalization is not allowed, the real upstream is asked
for the non-personalized route and never learns who is asking."""

from __future__ import annotations

import httpx

from tests.conftest import BASE_POLICY
from tests.sidecar.conftest import StartSidecar
from tests.sidecar.servers import RecordingUpstream

# Every purpose denied until the user says yes (the test policy grants `measurement` by default).
ALL_DENIED = {name: {**purpose, "default": "denied"} for name, purpose in BASE_POLICY["purposes"].items()}

IDENTIFYING = {
    "x-user-id": "alice",
    "x-user-age": "34",
    "cookie": "session=s3cr3t; euconsent-v2=CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
    "authorization": "Bearer alice-token",
    "x-forwarded-for": "198.51.100.7",
    "x-real-ip": "198.51.100.7",
}


async def test_without_consent_the_upstream_gets_the_rewrite_route_and_nothing_that_identifies_the_user(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar(purposes=ALL_DENIED)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        response = await client.get("/recommendations?page=2", headers={**IDENTIFYING, "accept-language": "ko"})

    seen = upstream.seen[-1]
    assert seen.path == "/recommendations/popular"
    assert seen.query == b"page=2"
    names = {name for name, _ in seen.headers}
    assert not names & {"x-user-id", "x-user-age", "cookie", "authorization", "x-forwarded-for", "x-real-ip"}
    everything = repr(seen.headers)
    for secret in ("alice", "s3cr3t", "CPXxRfAP", "198.51.100.7"):
        assert secret not in everything
    assert seen.header("accept-language") == ["ko"]  # what is not identifying still goes through

    # The user is told the list is not personalized.
    assert response.status_code == 200
    body = response.json()
    assert body["guardrail"]["policy"] == "test-policy"
    assert all(item["explanation"]["because"] == [] for item in body["items"])


async def test_with_consent_the_upstream_gets_the_personalized_route_and_the_user(
    start_sidecar: StartSidecar, upstream: RecordingUpstream
) -> None:
    sidecar = await start_sidecar(purposes=ALL_DENIED)
    async with httpx.AsyncClient(base_url=sidecar.url) as client:
        granted = await client.patch(
            "/guardrail/v1/controls",
            json={"consent": {"personalization": "granted"}},
            headers={"x-user-id": "alice", "content-type": "application/merge-patch+json"},
        )
        assert granted.status_code == 200
        await client.get("/recommendations", headers={"x-user-id": "alice"})
    seen = upstream.seen[-1]
    assert seen.path == "/recommendations"
    assert seen.header("x-user-id") == ["alice"]
    assert seen.header("x-forwarded-for") == ["127.0.0.1"]
