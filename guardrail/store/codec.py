"""How user state and decision records are written in Redis.

Controls are one hash per user, one field per map entry, so that a merge patch changes only the
fields it names and two devices changing different keys never overwrite each other:

    p        personalization "1"/"0" (absent: on)      l  locale
    r        revision                                  t  updated_at, epoch seconds
    c:<purpose>   consent "granted"/"denied"          s:<signal>  "1"/"0"
    m:<category>  muted until, epoch seconds ("" = no end)
    o:<category>  sensitive opt-in "1"/"0"
    u        paused until, epoch seconds (absent: not paused; states stored before pauses have none)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from operator import attrgetter
from types import MappingProxyType
from typing import Any

import orjson

from guardrail.caching import BoundedCache
from guardrail.engine.decisions import Action, ItemDecision, Reason
from guardrail.engine.loop import INDEX_FIRST
from guardrail.state import REMOVE, UNSET, ControlsPatch, Report, UserState
from guardrail.store.base import DecisionRecord

_PREFIXES = {"consent": "c:", "signals": "s:", "muted": "m:", "sensitive": "o:"}


def patch_ops(patch: ControlsPatch) -> list[str]:
    """The patch as (op, field, value) triples for patch.lua."""
    ops: list[str] = []
    if patch.personalization is not UNSET:
        if patch.personalization is None:
            ops += ["del", "p", ""]
        else:
            ops += ["set", "p", "1" if patch.personalization else "0"]
    if patch.locale is not UNSET:
        ops += ["del", "l", ""] if patch.locale is None else ["set", "l", str(patch.locale)]
    if patch.paused_until is not UNSET:
        until = patch.paused_until
        ops += ["set", "u", repr(until.timestamp())] if isinstance(until, datetime) else ["del", "u", ""]
    for name, changes in patch.maps.items():
        prefix = _PREFIXES[name]
        if changes is None:
            ops += ["clear", prefix, ""]
            continue
        for key, value in changes.items():
            if value is REMOVE:
                ops += ["del", prefix + key, ""]
            else:
                ops += ["set", prefix + key, _encode_value(name, value)]
    return ops


def _encode_value(name: str, value: Any) -> str:
    if name == "consent":
        return str(value)
    if name == "muted":
        return "" if value is None else repr(value.timestamp())
    return "1" if value else "0"


def decode_state(fields: Mapping[bytes, bytes]) -> UserState | None:
    if not fields:
        return None
    maps: dict[str, dict[str, Any]] = {name: {} for name in _PREFIXES}
    by_prefix = {prefix: name for name, prefix in _PREFIXES.items()}
    values: dict[str, Any] = {}
    for raw_name, raw_value in fields.items():
        name, value = raw_name.decode(), raw_value.decode()
        kind = by_prefix.get(name[:2])
        if kind == "consent":
            maps[kind][name[2:]] = value
        elif kind == "muted":
            maps[kind][name[2:]] = datetime.fromtimestamp(float(value), UTC) if value else None
        elif kind is not None:
            maps[kind][name[2:]] = value == "1"
        elif name == "p":
            values["personalization"] = value == "1"
        elif name == "l":
            values["locale"] = value
        elif name == "u":
            values["paused_until"] = datetime.fromtimestamp(float(value), UTC)
        elif name == "r":
            values["revision"] = int(value)
        elif name == "t":
            values["updated_at"] = datetime.fromtimestamp(float(value), UTC)
    for name, entries in maps.items():
        values[name] = MappingProxyType(entries)
    return UserState(**values)


_RECORD_JSON = attrgetter("record_json")
_NONE: list[str] = []  # shared, never changed


def encode_record(record: DecisionRecord) -> bytes:
    fields = {
        "id": record.id,
        "t": record.created_at,
        "route": record.route,
        "mode": record.mode,
        "policy": record.policy,
        "locale": record.locale,
        "degraded": record.degraded,
        "ids": record.item_ids,
    }
    if record.per_item is not None and record.distinct is not None:
        # Each distinct decision's [action, reasons, because] once, and a character per item naming it:
        # a page has a handful of decisions, each serialized once when made.
        fields["s"] = list(map(_RECORD_JSON, record.distinct))
        fields["i"] = record.per_item
    else:
        # [action, reasons, because] per item: two flat lists cost half a list of pairs.
        fields["d"] = list(map(_RECORD_JSON, record.decisions))
    if record.titles is not None:  # the route names a display field: each item's title, or null
        fields["n"] = record.titles
    return orjson.dumps(fields)


# Decoded decisions by (action, reasons, because, categories): a page has a handful of shapes, and a list
# of records repeats them, so each is built once (an ItemDecision serializes its parts when made).
_decoded: BoundedCache[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ItemDecision] = BoundedCache(4096)


def _decision(action: str, reasons: list[str], because: list[str], categories: list[str] = _NONE) -> ItemDecision:
    """One decision of a record: [action, reasons, because] and, since 2026-12-06, the item's categories."""
    key = (action, tuple(reasons), tuple(because), tuple(categories))
    found = _decoded.get(key)
    if found is None:
        reasons_read = tuple(Reason(r) for r in reasons)
        found = _decoded.put(key, ItemDecision(Action(action), reasons_read, 0, key[2], None, categories=key[3]))
    return found


def decode_record(user: str, raw: bytes) -> DecisionRecord:
    data = orjson.loads(raw)
    distinct: list[ItemDecision] | None = None
    per_item: str | None = data.get("i")
    if per_item is not None:  # the page's distinct decisions, and a character per item naming one
        item_ids = data["ids"]
        distinct = [_decision(*parts) for parts in data["s"]]
        decisions = [distinct[ord(char) - INDEX_FIRST] for char in per_item]
    else:
        if "items" in data:  # written before 2026-11-26: [id, [action, reasons, because]] per item
            item_ids = [item[0] for item in data["items"]]
            parts = [item[1] for item in data["items"]]
        else:  # written before 2026-12-06, or a page with more distinct decisions than `per_item` names
            item_ids, parts = data["ids"], data["d"]
        decisions = [_decision(*found) for found in parts]
    return DecisionRecord(
        id=data["id"],
        user=user,
        created_at=data["t"],
        route=data["route"],
        mode=data["mode"],
        policy=data["policy"],
        locale=data["locale"],
        degraded=data["degraded"],
        item_ids=item_ids,
        decisions=decisions,
        distinct=distinct,
        per_item=per_item,
        titles=data.get("n"),  # records written before 2026-12-06 have none
    )


def encode_report(report: Report) -> bytes:
    return orjson.dumps(
        {
            "decision": report.decision,
            "item": report.item,
            "reason": report.reason,
            "t": report.created_at,
            "route": report.route,
            "title": report.title,
            "note": report.note,
        }
    )


def decode_report(raw: bytes) -> Report:
    data = orjson.loads(raw)
    return Report(
        decision=data["decision"],
        item=data["item"],
        reason=data["reason"],
        created_at=data["t"],
        route=data["route"],
        title=data["title"],
        note=data["note"],
    )
