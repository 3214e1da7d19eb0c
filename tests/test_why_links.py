"""Each kept item's `why` link (guardrail/why_links.py): the C version (`_speedups.link`) against its reference,
the Python loop, on every page and id; and what a link is made of."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import guardrail.why_links
from guardrail.engine.loop import check_items
from guardrail.routes import RouteTable
from guardrail.speedups import native
from guardrail.why_links import attach_why, segment
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


def linked(page: list[dict[str, Any]], *, python: bool, monkeypatch: pytest.MonkeyPatch) -> bytes:
    page = copy.deepcopy(page)
    checked = check_items(context(CONSENTED), FIELDS, page, ("watch_history",), annotate=True)
    with monkeypatch.context() as patched:
        if python:
            patched.setattr(guardrail.why_links, "native", None)
        attach_why(page, checked.decisions, "id", "/guardrail", "d1")
    return orjson.dumps(checked.kept)


@examples(300)
@given(page=items(COMPILED.policy), chosen=st.lists(json_ids, max_size=12))
def test_the_c_links_are_the_python_ones(page: list[dict[str, Any]], chosen: list[Any]) -> None:
    assert native is not None, "the C extension is not built (tests/engine/test_speedups.py says how)"
    for entry, item_id in zip(page, chosen, strict=False):
        entry["id"] = item_id
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert linked(page, python=False, monkeypatch=monkeypatch) == linked(page, python=True, monkeypatch=monkeypatch)


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
    attach_why(page, checked.decisions, "id", "/guardrail", "d1")
    shown = {entry["id"]: orjson.loads(orjson.dumps(entry["explanation"])) for entry in checked.kept}
    assert shown["m1"]["why"] == "/guardrail/why/d1/m1"
    assert "why" not in shown["."]
    assert "g1" not in shown
    assert "explanation" not in page[2]


def test_in_process_items_get_a_dict_with_the_link() -> None:
    page: list[dict[str, Any]] = [{"id": "a b", "categories": ["movies"], "signals": ["watch_history"]}]
    checked = check_items(context(CONSENTED), FIELDS, page, (), annotate=True, as_dicts=True)
    shared: dict[str, Any] = page[0]["explanation"]
    attach_why(page, checked.decisions, "id", "/p", "d1", as_dicts=True)
    assert page[0]["explanation"] == {**shared, "why": "/p/why/d1/a%20b"}
    assert "why" not in shared  # the shared explanation is not changed
