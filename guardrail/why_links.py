"""Each kept item's `why`: the link to its own "why am I seeing this?" page (docs/api.md, "Why am I seeing
this?"), `{prefix}/why/{decision}/{item id, percent-encoded}`.

A page's kept items share a handful of explanations, serialized once each (`ItemDecision.explanation_json`).
The link is the one part that differs per item, so each kept item gets its decision's `link_head` (the
explanation's bytes, opened for one more key) with the link and the closing brace: no explanation is
serialized again. The C loop's `link` does this per item (guardrail/_speedups.c); `attach_why` is the
reference and runs where it cannot (an item that is not a dict, or a page the service writes itself).
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
_Fragment = orjson.Fragment


def why_path(prefix: str, decision: str, item_id: str | int) -> str:
    """The path of one item's "why?" page."""
    return f"{prefix}/why/{decision}/{segment(item_id)}"


def segment(item_id: str | int) -> str:
    """An item id as one path segment: every character outside the unreserved set percent-encoded (UTF-8)."""
    text = item_id if type(item_id) is str else str(item_id)
    # `strip` leaves nothing exactly when every character is unreserved.
    if not text.strip(_UNRESERVED):
        return text
    return quote(text, safe="", errors="surrogatepass")


def attach_why(
    items: list[Any],
    decisions: Sequence[ItemDecision],
    id_field: str,
    prefix: str,
    decision: str,
    *,
    as_dicts: bool = False,
) -> None:
    """Give each kept item's explanation, as the per-item loop attached it, its `why` link: an `orjson.Fragment`
    for a page the guardrail writes, or (`as_dicts`) a dict for one the service writes. `decisions`: one per
    item."""
    base = f"{prefix}/why/{decision}/"
    if (
        native is not None
        and not as_dicts
        and type(decisions) is list
        and native.link(items, decisions, id_field, base.encode(), _Fragment, segment)
    ):
        return
    for item, found in zip(items, decisions, strict=True):
        head = found.link_head
        if head is None:
            continue  # hidden, or kept without an explanation
        item_id = item[id_field]
        if item_id in _DOT_SEGMENTS:
            continue
        link = base + segment(item_id)
        if as_dicts:
            item[_EXPLANATION] = {**item[_EXPLANATION], "why": link}
        else:
            # Percent-encoding leaves nothing JSON escapes, and the policy's prefix is plain.
            item[_EXPLANATION] = _Fragment(head + link.encode() + b'"}')
