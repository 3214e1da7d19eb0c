"""Per-user bodies cacheable by others (issue 14): an enforced body kept the upstream's `Cache-Control: public`
and `ETag`, so a shared cache served one user's checked page to another, another user's `If-None-Match` got a
304 straight through, and a browser kept showing a topic its user had muted since.

Contract (docs/architecture.md §4): an enforced body goes out `Cache-Control: private, no-store`, without the upstream's
`ETag`, `Last-Modified` and `Expires`; no precondition reaches the upstream of a guarded route. Shadow mode
passes the upstream's bytes, and what the upstream says about them, through.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.attacks.support_representation import (
    ETAG,
    LAST_MODIFIED,
    SURFACES,
    NegotiatingUpstream,
    fetch,
    guarded,
    set_controls,
)
from tests.conftest import BASE_POLICY

ALICE = {"x-user-id": "alice"}
VALIDATORS = ("etag", "last-modified", "expires", "accept-ranges")


@pytest.mark.parametrize("surface", SURFACES)
async def test_an_enforced_body_is_private_and_has_no_validators(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path) as running:
        answer = await fetch(running.client, "/recommendations", ALICE)
        assert answer.status == 200
        assert answer.headers.get_list("cache-control") == ["private, no-store"]
        assert not any(name in answer.headers for name in VALIDATORS)
        assert int(answer.headers["content-length"]) == len(answer.raw)


@pytest.mark.parametrize("surface", SURFACES)
async def test_someone_elses_validator_gets_a_page_checked_for_the_caller(surface: str, tmp_path: Path) -> None:
    # The upstream's ETag is the same for everyone: whoever learned it (a shared cache, the upstream
    # itself, a shadow-mode answer) must not get a 304 that makes a stored page current again.
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path) as running:
        headers = {**ALICE, "if-none-match": ETAG, "if-modified-since": LAST_MODIFIED}
        answer = await fetch(running.client, "/recommendations", headers)
        assert answer.status == 200
        assert answer.ids() == ["s1"]


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_muted_topic_is_gone_on_the_next_visit(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path) as running:
        await set_controls(running.client, "alice", {"consent": {"personalization": "granted"}})
        first = await fetch(running.client, "/recommendations", ALICE)
        assert first.ids() == ["m1", "m2", "s1", "p1"]
        # Nothing lets the browser keep that page, or ask whether it is still current...
        assert "no-store" in first.headers["cache-control"]
        assert "etag" not in first.headers and "last-modified" not in first.headers

        await set_controls(running.client, "alice", {"muted": {"sports": {"until": None}}})
        # ... and a browser that asks anyway (as it would with the upstream's validators) gets the page as it is now.
        again = await fetch(running.client, "/recommendations", {**ALICE, "if-none-match": ETAG})
        assert again.status == 200
        assert again.ids() == ["m1", "m2"]  # s1 and p1 are sports


@pytest.mark.parametrize("surface", SURFACES)
async def test_an_unchecked_body_passed_in_open_mode_is_not_kept(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path, fail_mode="open") as running:
        answer = await fetch(running.client, "/recommendations?format=csv", ALICE)
        assert answer.status == 200
        assert answer.headers["guardrail-degraded"] == "1"
        assert answer.headers.get_list("cache-control") == ["private, no-store"]
        assert not any(name in answer.headers for name in VALIDATORS)


@pytest.mark.parametrize("surface", SURFACES)
async def test_shadow_mode_passes_the_upstreams_bytes_and_what_it_says_about_them(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path, mode="shadow") as running:
        answer = await fetch(running.client, "/recommendations", ALICE)
        assert answer.status == 200
        assert answer.raw == upstream.json_body()
        assert answer.headers["etag"] == ETAG
        assert answer.headers["cache-control"] == "public, max-age=600"
        assert answer.headers["guardrail-mode"] == "shadow"


async def test_a_head_answer_is_private_too(tmp_path: Path) -> None:
    # A HEAD answer may refresh the headers of a stored GET answer (RFC 9111 §4.3.5).
    routes = [{**BASE_POLICY["routes"][0], "methods": ["GET", "HEAD"]}, *BASE_POLICY["routes"][1:]]
    upstream = NegotiatingUpstream()
    async with guarded("middleware", upstream, tmp_path, routes=routes) as running:
        answer = await fetch(running.client, "/recommendations", ALICE, method="HEAD")
        assert answer.status == 200
        assert answer.headers.get_list("cache-control") == ["private, no-store"]
        assert not any(name in answer.headers for name in VALIDATORS)
