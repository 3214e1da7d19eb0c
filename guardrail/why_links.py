"""Each kept item's `why`: the link to its own "why am I seeing this?" page (docs/api.md, "Why am I seeing
this?"), `{prefix}/why/{decision}/{item id, percent-encoded}`.

A page's kept items share a handful of explanations, serialized once each (`ItemDecision.explanation_json`).
The link is the one part that differs per item, so each kept item gets its decision's explanation bytes with
`"why"` appended, without serializing the explanation again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson

from guardrail.engine import ItemDecision

# RFC 3986 unreserved characters: an id made only of these is its own path segment.
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_DOT_SEGMENTS = (".", "..")
_EXPLANATION = "explanation"
_Fragment = orjson.Fragment


def why_path(prefix: str, decision: str, item_id: str | int) -> str:
    """The path of one item's "why?" page."""
    return f"{prefix}/why/{decision}/{segment(item_id)}"


def segment(item_id: str | int) -> str:
    """An item id as one path segment: every character outside the unreserved set percent-encoded (UTF-8)."""
    text = item_id if type(item_id) is str else str(item_id)
    # `strip` leaves nothing exactly when every character is unreserved: the common case, in C.
    if not text.strip(_UNRESERVED) and text not in _DOT_SEGMENTS:
        return text
    if text in _DOT_SEGMENTS:  # a path would resolve them away
        return text.replace(".", "%2E")
    return quote(text, safe="", errors="surrogatepass")


def attach_why(items: list[Any], decisions: Sequence[ItemDecision], id_field: str, prefix: str, decision: str) -> None:
    """Give each kept item's explanation, as the per-item loop attached it (an `orjson.Fragment` for a page
    the guardrail writes, a dict for one the service writes), its `why` link. `decisions`: one per item."""
    base = f"{prefix}/why/{decision}/"
    heads: dict[int, bytes] = {}  # by decision identity: its explanation's bytes up to the closing brace
    for item, found in zip(items, decisions, strict=True):
        raw = found.explanation_bytes
        if found.hidden or raw is None:
            continue
        item_id = item[id_field]
        if item_id in _DOT_SEGMENTS:
            continue  # a server resolves `.` and `..` (even as %2E) away: no page could be reached by it
        link = base + segment(item_id)
        explanation = item[_EXPLANATION]
        if type(explanation) is _Fragment:
            head = heads.get(id(found))
            if head is None:
                head = heads[id(found)] = raw[:-1] + b',"why":"'
            # Percent-encoding leaves nothing JSON escapes, and the policy's prefix is plain.
            item[_EXPLANATION] = _Fragment(head + link.encode() + b'"}')
        else:
            item[_EXPLANATION] = {**explanation, "why": link}
