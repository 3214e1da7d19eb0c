"""Reading the items of an upstream body and deciding each one (docs/architecture.md §2)."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

import orjson

from guardrail.engine import ItemDecision, UserContext, decide
from guardrail.routes import GuardedRoute

try:
    from guardrail import _speedups
except ImportError:  # built without a C compiler: the Python loop below does the same, slower
    _speedups = None  # type: ignore[assignment]
if os.environ.get("GUARDRAIL_PURE_PYTHON"):  # to compare, or to rule the C loop out when debugging
    _speedups = None  # type: ignore[assignment]
# Whether check_items runs the C loop (guardrail/_speedups.c).
ACCELERATED = _speedups is not None

_NO_CATEGORIES: list[str] = []  # shared, never mutated: items without categories
# orjson reads an integer beyond 64 bits as a float (and cannot write one). Such an integer is a run of
# at least 19 digits (-9223372036854775809 is the first): a body with one is read and written by the
# stdlib, which keeps integers of any size exactly; every other body by orjson, which is much faster.
LONG_DIGIT_RUN = 19
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_DIGITS_ONLY = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))  # digits as 0, the rest blank
_ID_TYPES = (str, int)
_NUMBER_TYPES = (int, float)


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
    name = encoding.decode()
    parts: list[bytes] = []
    size = 0
    data = raw
    while True:
        # wbits=47 accepts both gzip and zlib framing; some servers label one as the other.
        inflater = zlib.decompressobj(wbits=47)
        try:
            part = inflater.decompress(data, limit + 1 - size)
        except zlib.error:
            raise BadBody("invalid_encoding", f"the {name} body does not decompress") from None
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise BadBody("too_large", f"the decompressed body is over max_body_bytes ({limit})")
        if not inflater.eof:
            # Without its end the checksum is unread: the body may be cut anywhere.
            raise BadBody("invalid_encoding", f"the {name} body is cut short")
        parts.append(part)
        # A gzip body may be several members one after the other (RFC 1952 §2.2): anything after
        # this one must be another, or decompressing it fails.
        data = inflater.unused_data
        if not data:
            return b"".join(parts)


# orjson reads up to 1,024 levels of nesting but writes only 255.
WRITABLE_DEPTH = 255


def read_json(body: bytes) -> tuple[Any, bool]:
    """The document, and whether it holds long digit runs (`write_json` then writes it `exact`)."""
    try:
        document = orjson.loads(body)  # the one judge of what is valid JSON, whichever parser reads it
    except orjson.JSONDecodeError as exc:
        raise BadBody("invalid_json", f"the body is not valid JSON ({exc})") from None
    if not has_digit_run(body, LONG_DIGIT_RUN):
        return document, False
    try:
        document = json.loads(body)
    except RecursionError:
        raise BadBody("too_deep", "the body is nested too deeply to read exactly") from None
    # What orjson cannot write is refused on this path too, whatever the stdlib's recursion allows here.
    if _deeper_than(document, WRITABLE_DEPTH):
        raise BadBody("too_deep", f"the body is nested too deeply to rewrite (over {WRITABLE_DEPTH} levels)")
    return document, True


def _deeper_than(document: Any, limit: int) -> bool:
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def write_json(document: Any, *, exact: bool) -> bytes:
    if exact:
        # read_json refused what is deeper than WRITABLE_DEPTH: far within the stdlib's recursion.
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=_fragment).encode()
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        raise BadBody("too_deep", f"the body is nested too deeply to rewrite (over {WRITABLE_DEPTH} levels)") from None


def _fragment(value: Any) -> Any:
    """An explanation serialized once by orjson, for the stdlib's writer."""
    if type(value) is orjson.Fragment:
        return orjson.loads(orjson.dumps(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


def storable_ids(item_ids: list[str | int]) -> list[str | int]:
    """Item ids as a decision record keeps them: an integer beyond 64 bits as its digits, which is
    how the receipt pages look an item up anyway."""
    return [
        str(item_id) if type(item_id) is int and not _INT64_MIN <= item_id <= _UINT64_MAX else item_id
        for item_id in item_ids
    ]


def has_digit_run_python(body: bytes, length: int) -> bool:
    """Whether `body` holds `length` ASCII digits in a row: the reference the C version is tested against."""
    return b"0" * length in body.translate(_DIGITS_ONLY)


# Bound once: every guarded body goes through it.
has_digit_run: Callable[[bytes, int], bool] = _speedups.has_digit_run if _speedups is not None else has_digit_run_python


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
    unknown: int  # how many carry a category the policy does not define, kept or not


def check_items(
    ctx: UserContext, route: GuardedRoute, items: list[Any], default_signals: tuple[str, ...], *, annotate: bool
) -> CheckedItems:
    """Decide every item, and split the kept from the hidden, in one pass (this is the hot loop).

    Items of a shape seen before cost a few lookups (the memo); a new shape is decided by the
    engine. Anything malformed raises `BadBody` naming the item and the field.
    """
    if _speedups is not None:
        fields = route.fields
        found = _speedups.check(
            items,
            fields.id,
            fields.categories,
            fields.signals,
            fields.signal_age_seconds,
            fields.inferred,
            list(default_signals),
            ctx.memo,
            ctx.compiled.fresh_seconds,
            annotate,
            lambda categories, signals, age, inferred: decide(ctx, categories, signals, age, inferred),
            _NO_CATEGORIES,
        )
        if found is not None:
            return CheckedItems(*found)
        # An item the C loop cannot read: this loop names it (and would decide it the same way).
    return check_items_python(ctx, route, items, default_signals, annotate=annotate)


def check_items_python(
    ctx: UserContext, route: GuardedRoute, items: list[Any], default_signals: tuple[str, ...], *, annotate: bool
) -> CheckedItems:
    """`check_items` in Python: the reference the C loop (guardrail/_speedups.c) is tested against."""
    fields = route.fields
    id_field, categories_field, signals_field = fields.id, fields.categories, fields.signals
    age_field, inferred_field = fields.signal_age_seconds, fields.inferred
    fresh_seconds = ctx.compiled.fresh_seconds
    cached = ctx.memo.get
    defaults = list(default_signals)
    decisions: list[ItemDecision] = []
    kept: list[dict[str, Any]] = []
    hidden: list[ItemDecision] = []
    add_decision, add_kept = decisions.append, kept.append
    discreet = unknown = 0
    # Every statement here runs once per item: locals are bound above, and an item that is not
    # an object (no `.get`) or has unhashable lists ends the loop with an exception that the
    # slow path below turns into a precise message.
    try:
        for item in items:
            item_id = item.get(id_field)
            categories = item.get(categories_field, _NO_CATEGORIES)
            signals = item.get(signals_field)
            if signals is None:
                signals = defaults
            # Most items carry neither optional field: `in` is cheaper than two .get() calls.
            if age_field in item or inferred_field in item:
                age = item.get(age_field)
                inferred = item.get(inferred_field, False)
                if (age is not None and type(age) not in _NUMBER_TYPES) or (
                    inferred is not False and inferred is not True
                ):
                    _reject(items, item, route)
                fresh = age is not None and age < fresh_seconds
            else:
                fresh = inferred = False
            if type(item_id) not in _ID_TYPES or type(categories) is not list or type(signals) is not list:
                _reject(items, item, route)
            decision = cached((fresh, inferred, len(categories), *categories, *signals))  # memo_key, inlined
            if decision is None:
                decision = decide(ctx, categories, signals, age if fresh else None, inferred)
            add_decision(decision)
            unknown += decision.unknown
            if decision.hidden:
                hidden.append(decision)
            else:
                discreet += decision.discreet
                if annotate:
                    item["explanation"] = decision.explanation_json
                add_kept(item)
    except (TypeError, AttributeError):
        _reject_first_bad(items, route)
    item_ids = [item[id_field] for item in items]
    return CheckedItems(decisions, item_ids, kept, hidden, discreet, unknown)


def _reject_first_bad(items: list[Any], route: GuardedRoute) -> NoReturn:
    """The slow path: find the first item that is not what the item contract says, and name it."""
    for index, item in enumerate(items):
        if type(item) is not dict:
            raise BadBody("bad_item", f"item {index} is a {type(item).__name__}, not an object")
        categories, signals = item.get(route.fields.categories, []), item.get(route.fields.signals) or []
        if not all(type(entry) is str for entry in (*categories, *signals)):
            raise BadBody("bad_item", f"item {index}: categories and signals must be strings")
    raise BadBody("bad_item", "an item does not follow the item contract")


def _reject(items: list[Any], item: dict[str, Any], route: GuardedRoute) -> NoReturn:
    """Name what is wrong with an item, for the person who can fix the upstream."""
    # Only for error messages: the loop above saves an enumerate() on every good item.
    index = next(index for index, candidate in enumerate(items) if candidate is item)
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
