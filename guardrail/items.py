"""Reading the items of an upstream body and deciding each one (design §2)."""

from __future__ import annotations

import zlib
from typing import Any

from guardrail.engine import ItemDecision, UserContext, decide
from guardrail.routes import GuardedRoute

_MISSING = object()


class BadBody(ValueError):
    """The upstream body on a guarded route cannot be checked. `kind` is a bounded metric label."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(detail)


def decode_body(raw: bytes, encoding: bytes, limit: int) -> bytes:
    """The body without its Content-Encoding, refusing to inflate past `limit` bytes."""
    if encoding in (b"", b"identity"):
        return raw
    if encoding not in (b"gzip", b"x-gzip", b"deflate"):
        raise BadBody(
            "unsupported_encoding",
            f"Content-Encoding {encoding.decode('latin-1')!r} is not supported",
        )
    # wbits=47 accepts both gzip and zlib framing; some servers label one as the other.
    inflater = zlib.decompressobj(wbits=47)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise BadBody("invalid_encoding", f"the {encoding.decode()} body does not decompress") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise BadBody("too_large", f"the decompressed body is over max_body_bytes ({limit})")
    return body


def encode_body(body: bytes, encoding: bytes) -> bytes:
    if encoding in (b"gzip", b"x-gzip"):
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        return compressor.compress(body) + compressor.flush()
    if encoding == b"deflate":
        return zlib.compress(body, 6)
    return body


def decide_items(
    ctx: UserContext, route: GuardedRoute, items: list[Any], default_signals: tuple[str, ...]
) -> list[ItemDecision]:
    fields = route.fields
    id_field, categories_field, signals_field = fields.id, fields.categories, fields.signals
    age_field, inferred_field = fields.signal_age_seconds, fields.inferred
    decisions = []
    for index, item in enumerate(items):
        if type(item) is not dict:
            raise BadBody("bad_item", f"item {index} is a {type(item).__name__}, not an object")
        item_id = item.get(id_field)
        if type(item_id) not in (str, int):
            raise BadBody("bad_item", f"item {index} has no {id_field!r} (a string or an integer)")
        categories = item.get(categories_field, ())
        signals = item.get(signals_field, _MISSING)
        if signals is _MISSING or signals is None:
            signals = default_signals
        age = item.get(age_field)
        inferred = item.get(inferred_field, False)
        if type(categories) not in (list, tuple) or type(signals) not in (list, tuple):
            raise BadBody(
                "bad_item",
                f"item {index}: {categories_field!r} and {signals_field!r} must be lists",
            )
        if age is not None and type(age) not in (int, float):
            raise BadBody("bad_item", f"item {index}: {age_field!r} must be a number of seconds")
        if type(inferred) is not bool:
            raise BadBody("bad_item", f"item {index}: {inferred_field!r} must be true or false")
        try:
            decisions.append(decide(ctx, categories, signals, age, inferred))
        except (TypeError, AttributeError):
            # An unhashable or non-string entry in a list: named here, not as a stack trace.
            raise BadBody("bad_item", f"item {index}: categories and signals must be strings") from None
    return decisions
