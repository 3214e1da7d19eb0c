"""Each kept item's `why`: the link to its own "why am I seeing this?" page (docs/api.md, "Why am I seeing
this?"), `{prefix}/why/{decision}/{item id, percent-encoded}`.

A page's kept items share a handful of explanations, serialized once each. The link is the one part that
differs per item, so the guardrail writes the page with each decision's `why_json` (its explanation, opened
for `"why":"` and holding a NUL byte where the link goes), then `fill_links` writes each kept item's link in
its placeholder, in one pass over the written bytes: no object per item. orjson escapes every NUL of the
page itself (`\\u0000`), so each raw one is a placeholder. The C version (`_speedups.fill_links`) runs where
it is built; `fill_links_python` is its reference. `link_dicts` links the explanation dicts of a page the
service writes itself (in C too), and `attach_why` a page written by the exact (stdlib) writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson

from guardrail.engine import ItemDecision
from guardrail.speedups import native

# RFC 3986 unreserved characters: an id made only of these is its own path segment.
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# A server resolves these (even spelled %2E) away: no page could be reached by them, so they get no link.
_DOT_SEGMENTS = (".", "..")
_EXPLANATION = "explanation"
# What a placeholder stands in, in a decision's `why_json`: the key before it, the closing quote after it.
_WHY_KEY = b',"why":"'
_Fragment = orjson.Fragment


def why_base(prefix: str, decision: str) -> str:
    """The links of one decision's items start with this."""
    return f"{prefix}/why/{decision}/"


def why_path(prefix: str, decision: str, item_id: str | int) -> str:
    """The path of one item's "why?" page."""
    return why_base(prefix, decision) + segment(item_id)


def segment(item_id: str | int) -> str:
    """An item id as one path segment: every character outside the unreserved set percent-encoded (UTF-8)."""
    text = item_id if type(item_id) is str else str(item_id)
    # `strip` leaves nothing exactly when every character is unreserved.
    if not text.strip(_UNRESERVED):
        return text
    return quote(text, safe="", errors="surrogatepass")


def fill_links(body: bytes, kept: list[dict[str, Any]], id_field: str, base: str) -> bytes:
    """`body`, a page written with the kept items' `why_json` explanations, with each placeholder replaced by
    that item's link (`base` its decision's `why_base`)."""
    if native is not None:
        filled: bytes = native.fill_links(body, kept, id_field, base.encode(), segment)
        return filled
    return fill_links_python(body, kept, id_field, base)


def fill_links_python(body: bytes, kept: list[dict[str, Any]], id_field: str, base: str) -> bytes:
    """`fill_links` in Python: the reference the C version is tested against."""
    parts = body.split(b"\x00")
    linked = [item[id_field] for item in kept if item.get(_EXPLANATION) is not None]
    if len(parts) != len(linked) + 1:
        raise RuntimeError("fill_links(): the placeholders and the kept items do not pair up")
    pieces = [parts[0]]
    prefix = base.encode()
    for item_id, after in zip(linked, parts[1:], strict=True):
        if item_id in _DOT_SEGMENTS:
            pieces[-1] = pieces[-1].removesuffix(_WHY_KEY)
            pieces.append(after[1:])  # without the link's closing quote
        else:
            pieces.append(prefix + segment(item_id).encode() + after)
    return b"".join(pieces)


def link_dicts(kept: list[Any], id_field: str, base: str) -> None:
    """Give each kept item's explanation dict (as the per-item loop attached it with `as_dicts`) its `why`
    link: a copy of the shared dict with the link. `base`: its decision's `why_base`."""
    if native is not None and native.link_dicts(kept, id_field, base, segment):
        return
    link_dicts_python(kept, id_field, base)


def link_dicts_python(kept: list[Any], id_field: str, base: str) -> None:
    """`link_dicts` in Python: the reference the C version is tested against."""
    for item in kept:
        explanation = item.get(_EXPLANATION)
        if explanation is None or item[id_field] in _DOT_SEGMENTS:
            continue
        item[_EXPLANATION] = {**explanation, "why": base + segment(item[id_field])}


def attach_why(
    items: list[Any],
    decisions: Sequence[ItemDecision],
    id_field: str,
    base: str,
) -> None:
    """Give each kept item's explanation, as the per-item loop attached it (its `explanation_json`), its `why`
    link, item by item: for a page the stdlib writes. `decisions`: one per item; `base`: its decision's
    `why_base`."""
    for item, found in zip(items, decisions, strict=True):
        head = found.link_head
        if head is None:
            continue  # hidden, or kept without an explanation
        item_id = item[id_field]
        if item_id in _DOT_SEGMENTS:
            continue
        # Percent-encoding leaves nothing JSON escapes, and the policy's prefix is plain.
        item[_EXPLANATION] = _Fragment(head + (base + segment(item_id)).encode() + b'"}')
