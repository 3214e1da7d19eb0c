"""Each kept item's `why` link (guardrail/why_links.py): the C version (`_speedups.link`) against its reference,
the Python loop, on every page and id; and what a link is made of."""

from __future__ import annotations

import copy
import os
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrail.engine.loop import check_items
from guardrail.routes import RouteTable
from guardrail.speedups import native
from guardrail.why_links import attach_why, fill_links_python, link_dicts_python, segment
from tests.engine.support import COMPILED, CONSENTED, context
from tests.strategies import examples, items

_ROUTE = RouteTable(COMPILED.policy.routes).match("/recommendations", "GET")
assert _ROUTE is not None
FIELDS = _ROUTE.fields
# Ids as JSON brings them (no lone surrogates: orjson reads none), and the odd ones by name.
json_ids = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    st.sampled_from([".", "..", "...", "a/b", "100%", "~x_y-z.1", "é", " "]),
    st.integers(-(2**63), 2**64 - 1),
)
ids = st.one_of(json_ids, st.just("\ud800"))


def c_version() -> Any:
    """The C extension, which must be built except in CI's leg without a compiler (as tests/engine/test_speedups.py
    checks): there the Python versions are checked alone."""
    if native is None:
        assert os.environ.get("GUARDRAIL_NO_EXTENSIONS") or os.environ.get("GUARDRAIL_PURE_PYTHON"), (
            "guardrail/_speedups.c is not built: install a C compiler and reinstall with `pip install -e .`"
        )
    return native


def written(page: list[dict[str, Any]], *, fill: Any) -> bytes:
    """The page as the responder writes it: checked with placeholders, serialized, then the links filled."""
    page = copy.deepcopy(page)
    checked = check_items(context(CONSENTED), FIELDS, page, ("watch_history",), annotate=True, linked=True)
    body = orjson.dumps({"items": checked.kept, "note": "a \u0000 of the page itself stays escaped"})
    filled: bytes = fill(body, checked.kept, "id", "/guardrail/why/d1/")
    return filled


def item_by_item(page: list[dict[str, Any]]) -> bytes:
    """The same page, each item's link attached to its own explanation (the exact writer's way)."""
    page = copy.deepcopy(page)
    checked = check_items(context(CONSENTED), FIELDS, page, ("watch_history",), annotate=True)
    attach_why(page, checked.decisions, "id", "/guardrail/why/d1/")
    return orjson.dumps({"items": checked.kept, "note": "a \u0000 of the page itself stays escaped"})


@examples(300)
@given(page=items(COMPILED.policy), chosen=st.lists(json_ids, max_size=12))
def test_the_c_links_are_the_python_ones(page: list[dict[str, Any]], chosen: list[Any]) -> None:
    for entry, item_id in zip(page, chosen, strict=False):
        entry["id"] = item_id
    in_python = written(page, fill=fill_links_python)
    assert in_python == item_by_item(page)
    c = c_version()
    if c is not None:
        assert written(page, fill=lambda *args: c.fill_links(*args[:3], args[3].encode(), segment)) == in_python
    assert b"\x00" not in in_python
    document = orjson.loads(in_python)
    for entry in document["items"]:
        if entry["id"] in (".", ".."):
            assert "why" not in entry["explanation"]
        else:
            assert entry["explanation"]["why"] == f"/guardrail/why/d1/{segment(entry['id'])}"


def test_placeholders_that_do_not_pair_up_with_items_are_refused() -> None:
    page = [{"id": "m1", "categories": ["movies"], "signals": ["watch_history"]}]
    checked = check_items(context(CONSENTED), FIELDS, page, (), annotate=True, linked=True)
    body = orjson.dumps(checked.kept)
    fills: list[Any] = [fill_links_python]
    c = c_version()
    if c is not None:
        fills.append(lambda *a: c.fill_links(*a[:3], a[3].encode(), segment))
    for fill in fills:
        with pytest.raises(RuntimeError, match="pair up"):
            fill(body + b"\x00", checked.kept, "id", "/b/")
        with pytest.raises(RuntimeError, match="pair up"):
            fill(body, checked.kept * 2, "id", "/b/")


@examples(200)
@given(item_id=ids)
def test_a_segment_is_unreserved_ascii_and_decodes_back_to_the_id(item_id: str | int) -> None:
    made = segment(item_id)
    assert made.isascii() and "/" not in made and "?" not in made and "#" not in made
    text = item_id if isinstance(item_id, str) else str(item_id)
    if "\ud800" not in text:
        assert unquote(made) == text


def test_a_hidden_item_and_a_dot_segment_get_no_link() -> None:
    page = [
        {"id": "m1", "categories": ["movies"], "signals": ["watch_history"]},
        {"id": ".", "categories": ["movies"], "signals": ["watch_history"]},
        {"id": "g1", "categories": ["gambling"], "signals": ["watch_history"]},
    ]
    checked = check_items(context(CONSENTED), FIELDS, page, (), annotate=True)
    attach_why(page, checked.decisions, "id", "/guardrail/why/d1/")
    shown = {entry["id"]: orjson.loads(orjson.dumps(entry["explanation"])) for entry in checked.kept}
    assert shown["m1"]["why"] == "/guardrail/why/d1/m1"
    assert "why" not in shown["."]
    assert "g1" not in shown
    assert "explanation" not in page[2]


@examples(200)
@given(page=items(COMPILED.policy), chosen=st.lists(ids, max_size=12))
def test_in_process_items_get_a_copy_of_the_shared_dict_with_the_link(
    page: list[dict[str, Any]], chosen: list[Any]
) -> None:
    for entry, item_id in zip(page, chosen, strict=False):
        entry["id"] = item_id
    results = []
    links: list[Any] = [link_dicts_python]
    c = c_version()
    if c is not None:
        links.append(lambda *args: c.link_dicts(*args, segment))
    for link in links:
        given_items = copy.deepcopy(page)
        checked = check_items(context(CONSENTED), FIELDS, given_items, (), annotate=True, as_dicts=True)
        shared = [dict(entry["explanation"]) for entry in checked.kept]
        link(checked.kept, "id", "/p/why/d1/")
        for entry, before in zip(checked.kept, shared, strict=True):
            if entry["id"] in (".", ".."):
                assert entry["explanation"] == before
            else:
                assert entry["explanation"] == {**before, "why": f"/p/why/d1/{segment(entry['id'])}"}
        # The shared dicts are not changed: the next page gets them as they were.
        assert all("why" not in d.explanation for d in checked.decisions if d.explanation is not None)
        results.append([entry["explanation"] for entry in checked.kept])
    assert all(result == results[0] for result in results)
