"""Receipts that name what was hidden (issue 18, point 5): a route's display field (`fields: {title: ...}`)
is kept in its decision records, bounded; the receipt and the controls page show it, and the page shows an
item hidden several times once, with a count."""

from __future__ import annotations

import copy
import html
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware, InProcess
from guardrail.bodies import TITLE_CHARS, item_titles
from guardrail.messages import message
from tests.conftest import BASE_POLICY, ClientFactory, make_policy
from tests.upstream import Upstream, http_scope, item

ALICE = {"x-user-id": "alice"}
LONG = "A very long name " * 20
ITEMS = [
    item("m1", ["movies"], [], name="Alien"),
    item("g1", ["gambling"], [], name="Poker <night> & more"),
    item("s1", ["sports"], [], name=LONG),
    item("s2", ["sports"], []),  # no title
]


def routes_titled(field: str | None = "name") -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = copy.deepcopy(BASE_POLICY["routes"])
    if field is not None:
        routes[2]["fields"] = {"title": field}  # /list, whose items are the whole body
    return routes


def middleware(field: str | None = "name") -> GuardrailMiddleware:
    return GuardrailMiddleware(
        Upstream(body=ITEMS), policy=make_policy(routes=routes_titled(field)), registry=CollectorRegistry()
    )


async def mute(client: httpx.AsyncClient, *topics: str) -> None:
    response = await client.patch(
        "/guardrail/v1/controls",
        headers={**ALICE, "content-type": "application/merge-patch+json"},
        json={"muted": {topic: {"until": None} for topic in topics}},
    )
    assert response.status_code == 200


async def receipt(client: httpx.AsyncClient) -> dict[str, Any]:
    page = await client.get("/list", headers=ALICE)
    assert page.status_code == 200
    found = await client.get(f"/guardrail/v1/decisions/{page.headers['guardrail-decision']}", headers=ALICE)
    data: dict[str, Any] = found.json()
    return data


def test_titles_are_text_and_bounded() -> None:
    items = [{"t": "Alien"}, {"t": 42}, {"t": 1.5}, {"t": True}, {"t": None}, {"t": ["x"]}, {}, {"t": LONG}]
    titles = item_titles(items, "t")
    assert titles[:7] == ["Alien", "42", "1.5", None, None, None, None]
    assert titles[7] == LONG[: TITLE_CHARS - 1] + "…" and len(titles[7] or "") == TITLE_CHARS
    # A lone surrogate (possible in a string made in process) cannot be written as JSON: it is replaced.
    assert item_titles([{"t": "a\ud800b"}], "t") == ["a?b"]


async def test_the_receipt_names_each_item_by_its_title(client_for: ClientFactory) -> None:
    client = client_for(middleware())
    await mute(client, "sports", "gambling")
    found = await receipt(client)
    assert [(i["id"], i["title"], i["action"]) for i in found["items"]] == [
        ("m1", "Alien", "keep"),
        ("g1", "Poker <night> & more", "hide"),
        ("s1", LONG[: TITLE_CHARS - 1] + "…", "hide"),
        ("s2", None, "hide"),
    ]


async def test_the_export_names_each_item_by_its_title_as_the_receipt_does(client_for: ClientFactory) -> None:
    client = client_for(middleware())
    await mute(client, "sports", "gambling")
    found = await receipt(client)
    exported = (await client.get("/guardrail/v1/export", headers=ALICE)).json()
    (record,) = [d for d in exported["decisions"] if d["decision"] == found["decision"]]
    assert record["items"] == found["items"]
    assert [i["title"] for i in record["items"]][:2] == ["Alien", "Poker <night> & more"]


async def test_without_a_display_field_receipts_are_as_before(client_for: ClientFactory) -> None:
    client = client_for(middleware(None))
    await mute(client, "sports")
    found = await receipt(client)
    assert all("title" not in i for i in found["items"])
    page = (await client.get("/guardrail/controls", headers=ALICE)).text
    assert "Item s1" in page and "Item s2" in page and "Alien" not in page


async def test_the_page_shows_titles_and_each_item_once_with_a_count(client_for: ClientFactory) -> None:
    client = client_for(middleware())
    await mute(client, "sports", "gambling")
    for _ in range(3):
        assert (await client.get("/list", headers=ALICE)).status_code == 200
    page = (await client.get("/guardrail/controls", headers=ALICE)).text
    hidden = page.split('<ul class="hidden-list">')[1].split("</ul>")[0]
    assert hidden.count("<li>") == 3  # g1, s1, s2: each once
    assert hidden.count(html.escape("Poker <night> & more", quote=False)) == 1  # escaped, once
    assert "<night>" not in page
    assert hidden.count(LONG[: TITLE_CHARS - 1] + "…") == 1
    assert hidden.count("Item s2") == 1  # no title: the id, as before
    assert "Alien" not in hidden  # kept, not hidden
    assert hidden.count(message("en", "page.hidden.count", n=3)) == 3
    assert "hidden 3 times" in hidden


@pytest.mark.parametrize("locale", ["en", "ko"])
def test_the_count_reads_in_every_locale(locale: str) -> None:
    assert "3" in message(locale, "page.hidden.count", n=3)


async def test_in_process_checks_keep_titles_too() -> None:
    gr = InProcess(middleware())
    checked = await gr.check(http_scope("/", headers=[(b"x-user-id", b"alice")]), copy.deepcopy(ITEMS), route="/list")
    record = await gr.middleware.runtime.store.decision("alice", checked.summary["decision"])
    assert record is not None
    assert record.titles == ["Alien", "Poker <night> & more", LONG[: TITLE_CHARS - 1] + "…", None]


async def test_titles_are_read_only_when_the_route_names_the_field() -> None:
    gr = InProcess(middleware(None))
    checked = await gr.check(http_scope("/", headers=[(b"x-user-id", b"alice")]), copy.deepcopy(ITEMS), route="/list")
    record = await gr.middleware.runtime.store.decision("alice", checked.summary["decision"])
    assert record is not None and record.titles is None
