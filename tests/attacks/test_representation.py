"""The client steers the representation (issue 14): encodings the guardrail cannot read, formats that are not
JSON, ranges, preconditions, a 204 with a JSON type, and integers beyond 64 bits.

Contract (docs/integrate.md): on a guarded route the upstream is asked only for what the guardrail can check (JSON, in
an encoding it can decode, whole and unconditional); a 2xx that is not JSON, or is partial, is unchecked and
follows the fail mode. Each attack runs against the middleware in process and the real sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from tests.attacks.support_representation import (
    CHECKED_IDS,
    SURFACES,
    NegotiatingUpstream,
    fetch,
    guarded,
    leaks,
)
from tests.conftest import BASE_POLICY
from tests.upstream import item

ALICE = {"x-user-id": "alice"}
DECODABLE = {"gzip", "x-gzip", "deflate", "identity"}


def codings(values: list[str]) -> set[str]:
    return {token.split(";")[0].strip().lower() for value in values for token in value.split(",")}


# -- Accept-Encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_encodings_the_guardrail_cannot_read_are_never_asked_for(
    surface: str, fail_mode: str, tmp_path: Path
) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path, fail_mode=fail_mode) as running:
        answer = await fetch(running.client, "/recommendations", {**ALICE, "accept-encoding": "br, zstd"})
        assert answer.status == 200
        assert "guardrail-degraded" not in answer.headers
        assert answer.ids() == CHECKED_IDS
        assert codings(upstream.last("accept-encoding")) <= DECODABLE


@pytest.mark.parametrize("surface", SURFACES)
async def test_decodable_encodings_the_client_accepts_are_still_used(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path) as running:
        answer = await fetch(running.client, "/recommendations", {**ALICE, "accept-encoding": "br;q=1.0, gzip;q=0.8"})
        assert upstream.last("accept-encoding") == ["gzip;q=0.8"]
        assert answer.headers["content-encoding"] == "gzip"  # re-encoded as it came
        assert answer.ids() == CHECKED_IDS


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_request_without_accept_encoding_asks_for_identity(surface: str, tmp_path: Path) -> None:
    # Without the header any coding is acceptable (RFC 9110 §12.5.3): the upstream could pick brotli.
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path) as running:
        answer = await fetch(running.client, "/recommendations", ALICE)
        assert upstream.last("accept-encoding") == ["identity"]
        assert answer.ids() == CHECKED_IDS


async def test_repeated_accept_encoding_headers_cannot_smuggle_a_coding(tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded("middleware", upstream, tmp_path) as running:
        request = running.client.build_request("GET", "/recommendations", headers=ALICE)
        request.headers["accept-encoding"] = "identity"
        # Two header lines of the same name, the second asking for brotli.
        request.headers._list.append((b"accept-encoding", b"accept-encoding", b"br"))
        response = await running.client.send(request)
        assert response.status_code == 200
        assert codings(upstream.last("accept-encoding")) <= DECODABLE
        assert [entry["id"] for entry in response.json()["items"]] == CHECKED_IDS


# -- Accept and ?format= ------------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("accept", ["text/csv", "text/csv, application/json;q=0.5", "*/*", None])
async def test_the_upstream_is_asked_for_json(surface: str, accept: str | None, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path) as running:
        headers = ALICE if accept is None else {**ALICE, "accept": accept}
        answer = await fetch(running.client, "/recommendations", headers)
        assert answer.status == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.ids() == CHECKED_IDS
        assert upstream.last("accept") == ["application/json"]


async def test_a_json_only_accept_reaches_the_upstream_as_sent(tmp_path: Path) -> None:
    # A JSON:API server answers 406 without its own media type: a JSON-only Accept stays as it is.
    upstream = NegotiatingUpstream()
    async with guarded("middleware", upstream, tmp_path) as running:
        accept = "application/vnd.api+json, application/json;q=0.9"
        answer = await fetch(running.client, "/recommendations", {**ALICE, "accept": accept})
        assert upstream.last("accept") == [accept]
        assert answer.ids() == CHECKED_IDS


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_non_json_success_is_refused_in_closed_mode(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path, fail_mode="closed") as running:
        # ?format= is the upstream's business: it answers CSV whatever the Accept header says.
        answer = await fetch(running.client, "/recommendations?format=csv", ALICE)
        assert answer.status == 502
        assert answer.headers["content-type"] == "application/problem+json"
        assert "text/csv" in answer.json()["detail"]
        assert not leaks(answer.raw)
        assert answer.headers["guardrail-degraded"] == "1"
        assert running.value("guardrail_upstream_bodies_total", kind="non_json") == 1
        assert running.value("guardrail_fail_mode_total", mode="closed") == 1


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_non_json_success_passes_marked_in_open_mode(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path, fail_mode="open") as running:
        answer = await fetch(running.client, "/recommendations?format=csv", ALICE)
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/csv")
        assert answer.headers["guardrail-degraded"] == "1"
        assert answer.raw.startswith(b"id,categories\n")
        assert running.value("guardrail_upstream_bodies_total", kind="non_json") == 1
        assert running.value("guardrail_fail_mode_total", mode="open") == 1
        assert running.value("guardrail_requests_total", route="/recommendations", outcome="degraded") == 1


# -- Range and preconditions --------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_a_range_request_gets_the_whole_checked_answer(surface: str, fail_mode: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path, fail_mode=fail_mode) as running:
        headers = {**ALICE, "range": "bytes=0-39", "if-range": '"v1-all-items"'}
        answer = await fetch(running.client, "/recommendations", headers)
        assert answer.status == 200
        assert "content-range" not in answer.headers
        assert answer.ids() == CHECKED_IDS
        assert upstream.last("range") == upstream.last("if-range") == []


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_partial_success_is_refused_in_closed_mode(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(always_partial=True)
    async with guarded(surface, upstream, tmp_path, fail_mode="closed") as running:
        answer = await fetch(running.client, "/recommendations", ALICE)
        assert answer.status == 502
        assert answer.headers["content-type"] == "application/problem+json"
        assert "206" in answer.json()["detail"]
        assert "content-range" not in answer.headers
        assert running.value("guardrail_upstream_bodies_total", kind="partial") == 1


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_partial_success_passes_marked_in_open_mode(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(always_partial=True)
    async with guarded(surface, upstream, tmp_path, fail_mode="open") as running:
        answer = await fetch(running.client, "/recommendations", ALICE)
        assert answer.status == 206
        assert answer.headers["guardrail-degraded"] == "1"
        assert answer.headers["content-range"].startswith("bytes 0-39/")
        assert running.value("guardrail_upstream_bodies_total", kind="partial") == 1
        assert running.value("guardrail_fail_mode_total", mode="open") == 1


PRECONDITIONS = {
    "if-none-match": '"v1-all-items"',
    "if-modified-since": "Thu, 26 Nov 2026 09:00:00 GMT",
    "if-match": '"v1-all-items"',
    "if-unmodified-since": "Thu, 26 Nov 2026 09:00:00 GMT",
    "if-range": '"v1-all-items"',
    "range": "bytes=0-39",
    "a-im": "feed",  # RFC 3229 delta encoding: a 226 would carry a diff, not the page
}


@pytest.mark.parametrize("surface", SURFACES)
async def test_no_precondition_or_range_of_a_get_reaches_the_upstream(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream()
    async with guarded(surface, upstream, tmp_path) as running:
        answer = await fetch(running.client, "/recommendations", {**ALICE, **PRECONDITIONS})
        assert answer.status == 200
        assert answer.ids() == CHECKED_IDS
        assert not set(upstream.seen[-1]) & set(PRECONDITIONS)


async def test_write_preconditions_of_other_methods_still_reach_the_upstream(tmp_path: Path) -> None:
    # On a POST, If-Match guards a write (RFC 9110 §13.1.1): the upstream must see it.
    routes = [*BASE_POLICY["routes"], {"path": "/recommendations/search", "methods": ["POST"], "items": "/items"}]
    upstream = NegotiatingUpstream()
    async with guarded("middleware", upstream, tmp_path, routes=routes) as running:
        headers = {**ALICE, "if-match": '"v1-all-items"', "if-none-match": '"v1-all-items"'}
        answer = await fetch(running.client, "/recommendations/search", headers, method="POST")
        assert answer.status == 200
        assert upstream.last("if-match") == ['"v1-all-items"']
        assert upstream.last("if-none-match") == []  # a cached page for someone else: never


# -- bodies with nothing to check ---------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_204_with_a_json_type_passes_through(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(no_content=True)
    async with guarded(surface, upstream, tmp_path, fail_mode="closed") as running:
        answer = await fetch(running.client, "/recommendations", ALICE)
        assert answer.status == 204
        assert answer.raw == b""
        assert "guardrail-degraded" not in answer.headers
        assert running.value("guardrail_upstream_bodies_total", kind="no_content") == 1
        assert running.value("guardrail_fail_mode_total", mode="closed") == 0


# -- integers beyond 64 bits --------------------------------------------------------------------

BIG = 123456789012345678901234567890
# Just outside what orjson reads as an integer, both ends.
EDGES = {"u64_plus_one": 2**64, "i64_minus_one": -(2**63) - 1, "u64_max": 2**64 - 1, "i64_min": -(2**63)}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("mode", ["enforce", "shadow"])
async def test_integers_beyond_64_bits_stay_exact(surface: str, mode: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(
        items=[
            item("s1", ["sports"], [], big=BIG, edges=EDGES, nested={"deep": [-BIG, {"n": 2**200}]}),
            # An item id beyond 64 bits is still an integer id (docs/architecture.md §2): it is checked, not refused.
            {"id": 2**70, "categories": ["sports"], "signals": []},
            {"id": 2**71, "categories": ["gambling"], "signals": ["watch_history"]},
            item("digits", ["sports"], [], code="123456789012345678901234567890", score=0.1234567890123456789),
        ]
    )
    async with guarded(surface, upstream, tmp_path, mode=mode) as running:
        answer = await fetch(running.client, "/recommendations", ALICE)
        assert answer.status == 200, answer.raw
        assert "guardrail-degraded" not in answer.headers
        # The stdlib reads integers of any size exactly: what the client can read, it reads exactly.
        body = json.loads(answer.body())
        kept = {entry["id"] if isinstance(entry["id"], str) else repr(entry["id"]): entry for entry in body["items"]}
        expected = ["s1", repr(2**70), "digits"] if mode == "enforce" else ["s1", repr(2**70), repr(2**71), "digits"]
        assert list(kept) == expected
        assert kept["s1"]["big"] == BIG and type(kept["s1"]["big"]) is int
        assert kept["s1"]["edges"] == EDGES
        assert kept["s1"]["nested"] == {"deep": [-BIG, {"n": 2**200}]}
        assert kept["digits"]["code"] == "123456789012345678901234567890"
        assert kept["digits"]["score"] == 0.1234567890123456789
        assert answer.headers["guardrail-hidden"] == "1"


async def test_a_body_with_big_integers_keeps_its_strings_byte_for_byte(tmp_path: Path) -> None:
    title = 'Caf\u00e9 \U0001f3b2 \u2028 "quoted" \\ \x7f'
    upstream = NegotiatingUpstream(items=[item("s1", ["sports"], [], title=title, big=BIG)])
    async with guarded("middleware", upstream, tmp_path) as running:
        answer = await fetch(running.client, "/recommendations", ALICE)
        (kept,) = json.loads(answer.body())["items"]
        assert kept["title"] == title
        assert kept["big"] == BIG
        assert orjson.loads(answer.body())["guardrail"]["kept"] == 1


@pytest.mark.parametrize("surface", SURFACES)
async def test_an_item_with_an_integer_id_beyond_64_bits_has_a_receipt(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(items=[{"id": 2**70, "categories": ["sports"], "signals": []}])
    async with guarded(surface, upstream, tmp_path) as running:
        answer = await fetch(running.client, "/recommendations", ALICE)
        assert answer.status == 200
        decision = answer.headers["guardrail-decision"]
        receipt = await running.client.get(f"/guardrail/v1/decisions/{decision}", headers=ALICE)
        assert receipt.status_code == 200
        # The receipt names it by its digits, as a page would look it up.
        assert [entry["id"] for entry in receipt.json()["items"]] == [str(2**70)]
