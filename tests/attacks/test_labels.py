"""Labels the policy never heard of were harmless (issue 14): a personalized item in `Gambling` or `crypto_casino`
was kept with a normal explanation, so an upstream (or a taxonomy drifting under it) walked sensitive items
past the opt-in, and muted topics back onto the page, by spelling a category differently.

Contract (docs/integrate.md): category ids are matched after Unicode NFKC normalization, trimming and lowercasing; an
id still not in the policy is an unknown category, decided by `unknown_categories` (discreet, hide or keep)
with reason `unknown_category`, and counted in `guardrail_unknown_categories_total{route}`. The re-serialized
item keeps its categories exactly as the upstream sent them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.attacks.support_representation import SURFACES, NegotiatingUpstream, fetch, guarded, set_controls
from tests.upstream import item

ALICE = {"x-user-id": "alice"}
CONSENTED = {"consent": {"personalization": "granted"}}
ROUTE = "/recommendations"
DISCREET_TEXT = "You see this because of how you use this service."
NORMAL_TEXT = "You see this because of what you watched."
# Spellings of `gambling` (sensitive: hidden without an opt-in) an upstream may send.
GAMBLING_SPELLINGS = [
    " Gambling",
    "GAMBLING",
    "gambling\t",
    "\uff47\uff41\uff4d\uff42\uff4c\uff49\uff4e\uff47",
    "Gambling.Poker",
]


def shown(body: bytes) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in orjson.loads(body)["items"]}


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_sensitive_category_spelled_otherwise_still_needs_the_opt_in(surface: str, tmp_path: Path) -> None:
    items = [item(f"g{index}", [spelling], ["watch_history"]) for index, spelling in enumerate(GAMBLING_SPELLINGS)]
    upstream = NegotiatingUpstream(items=[*items, item("m1", ["Movies "], ["watch_history"])])
    async with guarded(surface, upstream, tmp_path) as running:
        await set_controls(running.client, "alice", CONSENTED)
        answer = await fetch(running.client, ROUTE, ALICE)
        kept = shown(answer.body())
        assert list(kept) == ["m1"]
        assert answer.headers["guardrail-hidden"] == str(len(GAMBLING_SPELLINGS))
        # Matched as `movies`; sent on exactly as the upstream spelled it.
        assert kept["m1"]["categories"] == ["Movies "]
        assert kept["m1"]["explanation"]["text"] == NORMAL_TEXT
        assert running.value("guardrail_hidden_items_total", route=ROUTE, reason="sensitive_needs_opt_in") == 5
        assert running.value("guardrail_unknown_categories_total", route=ROUTE) == 0


@pytest.mark.parametrize("surface", SURFACES)
async def test_a_muted_topic_spelled_otherwise_stays_muted(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(
        items=[item("s1", ["SPORTS"], []), item("s2", ["Sports.Football "], ["watch_history"]), item("m1", ["movies"])]
    )
    async with guarded(surface, upstream, tmp_path) as running:
        await set_controls(running.client, "alice", {**CONSENTED, "muted": {"sports": {"until": None}}})
        answer = await fetch(running.client, ROUTE, ALICE)
        assert list(shown(answer.body())) == ["m1"]
        assert orjson.loads(answer.body())["guardrail"]["notice"] == "We hid 2 suggestions because you muted sports."


@pytest.mark.parametrize("surface", SURFACES)
async def test_an_unknown_category_is_shown_discreetly_by_default(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(
        items=[item("c1", ["crypto_casino"], ["watch_history"]), item("c2", ["movies", "Casino Night"], [])]
    )
    async with guarded(surface, upstream, tmp_path) as running:
        await set_controls(running.client, "alice", CONSENTED)
        answer = await fetch(running.client, ROUTE, ALICE)
        kept = shown(answer.body())
        assert list(kept) == ["c1", "c2"]
        # Names neither the topic nor the data: safe on a shared screen, whatever the label turns out to be.
        decision = orjson.loads(answer.body())["guardrail"]["decision"]
        assert kept["c1"]["explanation"] == {
            "text": DISCREET_TEXT,
            "because": [],
            "controls": "/guardrail/controls",
            "why": f"/guardrail/why/{decision}/c1",  # a page only alice can open, discreet until she asks
        }
        assert running.value("guardrail_unknown_categories_total", route=ROUTE) == 2
        assert running.value("guardrail_items_total", route=ROUTE, action="discreet") == 2


@pytest.mark.parametrize("surface", SURFACES)
async def test_unknown_categories_hide_when_the_policy_says_so(surface: str, tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(
        items=[
            item("c1", ["crypto_casino"], ["watch_history"]),
            item("c2", ["Casino Night"], []),
            item("m1", ["movies"], []),
        ]
    )
    async with guarded(surface, upstream, tmp_path, unknown_categories="hide") as running:
        await set_controls(running.client, "alice", CONSENTED)
        answer = await fetch(running.client, ROUTE, ALICE)
        assert list(shown(answer.body())) == ["m1"]
        summary = orjson.loads(answer.body())["guardrail"]
        assert summary["notice"] == "We hid 2 suggestions because we could not check their topic."
        receipt = await running.client.get(f"/guardrail/v1/decisions/{summary['decision']}", headers=ALICE)
        reasons = {entry["id"]: entry["reasons"] for entry in receipt.json()["items"]}
        assert reasons == {"c1": ["unknown_category"], "c2": ["unknown_category"], "m1": []}
        assert running.value("guardrail_hidden_items_total", route=ROUTE, reason="unknown_category") == 2
        assert running.value("guardrail_unknown_categories_total", route=ROUTE) == 2


async def test_unknown_categories_are_kept_when_the_policy_says_so_and_still_counted(tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(items=[item("c1", ["crypto_casino"], ["watch_history"])])
    async with guarded("middleware", upstream, tmp_path, unknown_categories="keep") as running:
        await set_controls(running.client, "alice", CONSENTED)
        answer = await fetch(running.client, ROUTE, ALICE)
        assert shown(answer.body())["c1"]["explanation"]["text"] == NORMAL_TEXT
        assert running.value("guardrail_unknown_categories_total", route=ROUTE) == 1


async def test_a_sub_category_of_a_known_one_is_not_unknown(tmp_path: Path) -> None:
    upstream = NegotiatingUpstream(items=[item("m1", ["Movies.Thriller"], ["watch_history"])])
    async with guarded("middleware", upstream, tmp_path, unknown_categories="hide") as running:
        await set_controls(running.client, "alice", CONSENTED)
        answer = await fetch(running.client, ROUTE, ALICE)
        assert shown(answer.body())["m1"]["explanation"]["text"] == NORMAL_TEXT
        assert running.value("guardrail_unknown_categories_total", route=ROUTE) == 0


async def test_a_minor_does_not_see_an_unknown_category_even_unpersonalized(tmp_path: Path) -> None:
    # Minor rules fail closed (docs/architecture.md §5): a label nobody reviewed may be anything.
    upstream = NegotiatingUpstream(items=[item("c1", ["crypto_casino"], []), item("m1", ["movies"], [])])
    async with guarded("middleware", upstream, tmp_path) as running:
        answer = await fetch(running.client, ROUTE, {**ALICE, "x-user-age": "15"})
        assert list(shown(answer.body())) == ["m1"]
        assert running.value("guardrail_hidden_items_total", route=ROUTE, reason="minor_protection") == 1
