"""The per-item loop (docs/architecture.md §2): every item of a page decided, the kept split from the hidden.

It runs in C (guardrail/_speedups.c) when the extension is built; `check_items_python` is the reference
both are tested against. Items of a shape seen before cost a few lookups in the context's memo; a new
shape is decided by `decide`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, NoReturn, Protocol

from guardrail.engine.context import UserContext
from guardrail.engine.decisions import ItemDecision, Reason
from guardrail.engine.evaluate import decide
from guardrail.speedups import native

_NO_CATEGORIES: list[str] = []  # shared, never mutated: items without categories
# The decision attribute the C loop attaches to a kept item as its `explanation`.
_AS_JSON, _AS_DICT, _AS_WHY = "explanation_json", "explanation", "why_json"
_ID_TYPES = (str, int)
_NUMBER_TYPES = (int, float)
# Integers a decision record keeps as they are; beyond these, as their digits (guardrail.bodies.storable_ids).
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
# The most distinct decisions a page's `index` can name (the C loop's cache of what it read of each).
DISTINCT = 32
# `per_item` names the decision at position p of `distinct` by the character chr(INDEX_FIRST + p): '0' to 'O',
# none of which JSON escapes.
INDEX_FIRST = ord("0")


class ItemFields(Protocol):
    """Where an item keeps what the engine reads (a route's `fields` in the policy)."""

    @property
    def id(self) -> str: ...
    @property
    def categories(self) -> str: ...
    @property
    def signals(self) -> str: ...
    @property
    def signal_age_seconds(self) -> str: ...
    @property
    def inferred(self) -> str: ...


class BadItem(ValueError):
    """An item that does not follow the item contract; the message names the item and the field."""


class CheckedItems(NamedTuple):
    decisions: list[ItemDecision]  # one per item, in order
    item_ids: list[str | int]
    kept: list[dict[str, Any]]  # the items to show, annotated when asked to
    hidden: list[ItemDecision]
    discreet: int  # how many of the kept ones are discreet
    unknown: int  # how many carry a category the policy does not define, kept or not
    # The page's distinct decisions (objects), first seen first, and `per_item` one character per item
    # naming its decision's position there (INDEX_FIRST + position): a page has a handful, so what is said
    # once per decision (a record's parts) is said once. None for both beyond DISTINCT distinct decisions.
    distinct: list[ItemDecision] | None
    per_item: str | None
    # How many items were hidden for each `notice_key` (deciding reason, muted topic): all the notice and
    # the hidden-item counters need, without going over the hidden items again.
    hidden_by_kind: dict[tuple[Reason, str | None], int]
    wide_ids: bool  # some id is an integer beyond 64 bits


def check_items(
    ctx: UserContext,
    fields: ItemFields,
    items: list[Any],
    default_signals: tuple[str, ...],
    *,
    annotate: bool,
    as_dicts: bool = False,
    linked: bool = False,
) -> CheckedItems:
    """Decide every item, and split the kept from the hidden, in one pass (this is the hot loop).
    `annotate`: attach each kept item's explanation, serialized once (`orjson.Fragment`, for a page the
    guardrail writes) or, with `as_dicts`, as the dict itself (for a page the service writes). `linked`: the
    serialized explanation with a placeholder for its `why` link (`ItemDecision.why_json`), which
    `guardrail.why_links.fill_links` fills in the written page. Anything malformed raises `BadItem`."""
    if native is not None:
        found = native.check(
            items,
            fields.id,
            fields.categories,
            fields.signals,
            fields.signal_age_seconds,
            fields.inferred,
            list(default_signals),
            ctx.memo.data,
            ctx.compiled.fresh_seconds,
            (_AS_DICT if as_dicts else _AS_WHY if linked else _AS_JSON) if annotate else None,
            lambda categories, signals, age, inferred: decide(ctx, categories, signals, age, inferred),
            _NO_CATEGORIES,
        )
        if found is not None:
            return CheckedItems(*found)
        # An item the C loop cannot read: this loop names it (and would decide it the same way).
    return check_items_python(ctx, fields, items, default_signals, annotate=annotate, as_dicts=as_dicts, linked=linked)


def check_items_python(
    ctx: UserContext,
    fields: ItemFields,
    items: list[Any],
    default_signals: tuple[str, ...],
    *,
    annotate: bool,
    as_dicts: bool = False,
    linked: bool = False,
) -> CheckedItems:
    """`check_items` in Python: the reference the C loop (guardrail/_speedups.c) is tested against."""
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
    # As the C loop: the first DISTINCT distinct decisions (by identity) get a position and are counted
    # by it; the hidden ones past those are counted by kind one by one.
    positions: dict[int, int] = {}
    distinct: list[ItemDecision] = []
    counts: list[int] = []
    index: list[str] = []
    hidden_by_kind: dict[tuple[Reason, str | None], int] = {}
    overflowed = False
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
                    _reject(items, item, fields)
                fresh = age is not None and age < fresh_seconds
            else:
                fresh = inferred = False
            if type(item_id) not in _ID_TYPES or type(categories) is not list or type(signals) is not list:
                _reject(items, item, fields)
            decision = cached((fresh, inferred, len(categories), *categories, *signals))  # memo_key, inlined
            if decision is None:
                decision = decide(ctx, categories, signals, age if fresh else None, inferred)
            add_decision(decision)
            position = positions.get(id(decision))
            if position is None and len(distinct) < DISTINCT:
                position = positions[id(decision)] = len(distinct)
                distinct.append(decision)
                counts.append(0)
            if position is None:
                overflowed = True
                if decision.hidden:
                    _count_hidden(hidden_by_kind, decision, 1)
            else:
                index.append(chr(INDEX_FIRST + position))
                counts[position] += 1
            unknown += decision.unknown
            if decision.hidden:
                hidden.append(decision)
            else:
                discreet += decision.discreet
                if annotate:
                    item["explanation"] = (
                        decision.explanation if as_dicts else decision.why_json if linked else decision.explanation_json
                    )
                add_kept(item)
    except (TypeError, AttributeError):
        _reject_first_bad(items, fields)
    item_ids = [item[id_field] for item in items]
    for decision, count in zip(distinct, counts, strict=True):
        if decision.hidden:
            _count_hidden(hidden_by_kind, decision, count)
    wide_ids = any(type(item_id) is int and not _INT64_MIN <= item_id <= _UINT64_MAX for item_id in item_ids)
    if overflowed:
        return CheckedItems(decisions, item_ids, kept, hidden, discreet, unknown, None, None, hidden_by_kind, wide_ids)
    return CheckedItems(
        decisions, item_ids, kept, hidden, discreet, unknown, distinct, "".join(index), hidden_by_kind, wide_ids
    )


def _count_hidden(hidden_by_kind: dict[tuple[Reason, str | None], int], decision: ItemDecision, count: int) -> None:
    key = decision.notice_key
    assert key is not None  # a hidden decision has a deciding reason
    hidden_by_kind[key] = hidden_by_kind.get(key, 0) + count


def _reject_first_bad(items: list[Any], fields: ItemFields) -> NoReturn:
    """The slow path: find the first item that is not what the item contract says, and name it."""
    for index, item in enumerate(items):
        if type(item) is not dict:
            raise BadItem(f"item {index} is a {type(item).__name__}, not an object")
        categories, signals = item.get(fields.categories, []), item.get(fields.signals) or []
        if not all(type(entry) is str for entry in (*categories, *signals)):
            raise BadItem(f"item {index}: categories and signals must be strings")
    raise BadItem("an item does not follow the item contract")


def _reject(items: list[Any], item: dict[str, Any], fields: ItemFields) -> NoReturn:
    """Name what is wrong with an item, for the person who can fix the upstream."""
    # Only for error messages: the loop above saves an enumerate() on every good item.
    index = next(index for index, candidate in enumerate(items) if candidate is item)
    if type(item.get(fields.id)) not in (str, int):
        raise BadItem(f"item {index} has no {fields.id!r} (a string or an integer)")
    if type(item.get(fields.categories, _NO_CATEGORIES)) is not list or type(item.get(fields.signals, [])) not in (
        list,
        type(None),
    ):
        raise BadItem(f"item {index}: {fields.categories!r} and {fields.signals!r} must be lists")
    age = item.get(fields.signal_age_seconds)
    if age is not None and type(age) not in (int, float):
        raise BadItem(f"item {index}: {fields.signal_age_seconds!r} must be a number of seconds")
    raise BadItem(f"item {index}: {fields.inferred!r} must be true or false")
