"""Reading the items of an upstream body and deciding each one (design §2)."""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple, NoReturn

from guardrail.engine import ItemDecision, UserContext, decide
from guardrail.routes import GuardedRoute

_NO_CATEGORIES: list[str] = []  # shared, never mutated: items without categories


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


class CheckedItems(NamedTuple):
    decisions: list[ItemDecision]  # one per item, in order
    item_ids: list[str | int]
    kept: list[dict[str, Any]]  # the items to show, annotated when asked to
    hidden: list[ItemDecision]
    discreet: int  # how many of the kept ones are discreet


def check_items(
    ctx: UserContext, route: GuardedRoute, items: list[Any], default_signals: tuple[str, ...], *, annotate: bool
) -> CheckedItems:
    """Decide every item, and split the kept from the hidden, in one pass (this is the hot loop).

    Items of a shape seen before cost a few lookups (the memo); a new shape is decided by the
    engine. Anything malformed raises `BadBody` naming the item and the field.
    """
    fields = route.fields
    id_field, categories_field, signals_field = fields.id, fields.categories, fields.signals
    age_field, inferred_field = fields.signal_age_seconds, fields.inferred
    fresh_seconds = ctx.compiled.fresh_seconds
    memo = ctx.memo
    defaults = list(default_signals)
    decisions: list[ItemDecision] = []
    item_ids: list[str | int] = []
    kept: list[dict[str, Any]] = []
    hidden: list[ItemDecision] = []
    discreet = 0
    for item in items:
        if type(item) is not dict:
            raise BadBody("bad_item", f"item {_index(items, item)} is a {type(item).__name__}, not an object")
        item_id = item.get(id_field)
        categories = item.get(categories_field, _NO_CATEGORIES)
        signals = item.get(signals_field)
        if signals is None:
            signals = defaults
        # Most items carry neither optional field: `in` is cheaper than two .get() calls.
        if age_field in item or inferred_field in item:
            age = item.get(age_field)
            inferred = item.get(inferred_field, False)
            if (age is not None and type(age) is not float and type(age) is not int) or (
                inferred is not False and inferred is not True
            ):
                _reject(_index(items, item), item, route)
        else:
            age = None
            inferred = False
        if (
            (type(item_id) is not str and type(item_id) is not int)
            or type(categories) is not list
            or type(signals) is not list
        ):
            _reject(_index(items, item), item, route)
        try:
            key = (tuple(categories), tuple(signals), age is not None and age < fresh_seconds, inferred)
            decision = memo.get(key)
            if decision is None:
                decision = decide(ctx, categories, signals, age, inferred)
        except (TypeError, AttributeError):
            # An unhashable or non-string entry in a list: named here, not as a stack trace.
            index = _index(items, item)
            raise BadBody("bad_item", f"item {index}: categories and signals must be strings") from None
        decisions.append(decision)
        item_ids.append(item_id)
        if decision.hidden:
            hidden.append(decision)
        else:
            discreet += decision.discreet
            if annotate:
                item["explanation"] = decision.explanation_json
            kept.append(item)
    return CheckedItems(decisions, item_ids, kept, hidden, discreet)


def _index(items: list[Any], item: Any) -> int:
    # Only for error messages: the loop above saves an enumerate() on every good item.
    return next(index for index, candidate in enumerate(items) if candidate is item)


def _reject(index: int, item: dict[str, Any], route: GuardedRoute) -> NoReturn:
    """Name what is wrong with an item, for the person who can fix the upstream."""
    fields = route.fields
    if type(item.get(fields.id)) not in (str, int):
        raise BadBody("bad_item", f"item {index} has no {fields.id!r} (a string or an integer)")
    if type(item.get(fields.categories, _NO_CATEGORIES)) is not list or type(item.get(fields.signals, [])) not in (
        list,
        type(None),
    ):
        raise BadBody("bad_item", f"item {index}: {fields.categories!r} and {fields.signals!r} must be lists")
    age = item.get(fields.signal_age_seconds)
    if age is not None and type(age) not in (int, float):
        raise BadBody("bad_item", f"item {index}: {fields.signal_age_seconds!r} must be a number of seconds")
    raise BadBody("bad_item", f"item {index}: {fields.inferred!r} must be true or false")
