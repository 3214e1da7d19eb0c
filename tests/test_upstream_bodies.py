"""Any upstream body, through the real middleware: a defined outcome every time (issue 8).

A guarded response is either checked (200, items decided and annotated), refused (closed mode: 502
problem+json saying why, nothing of the body), or passed through unchecked (open mode and shadow:
byte-identical, marked `Guardrail-Degraded: 1`). Never an exception, never a 500. In shadow mode the
body is byte-identical whatever it is. Bodies are random JSON, valid item lists, and mutations of them.
"""

from __future__ import annotations

import copy
import gzip
import json
import zlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.targets import BODY_MODES, RawUpstream, body_outcome, decoded
from tests.strategies import examples, items

MODES = sorted(BODY_MODES)


# -- what a body can be ---------------------------------------------------------------------------

POLICY = BODY_MODES["enforce", "closed"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)  # fmt: skip
valid_documents: st.SearchStrategy[dict[str, Any]] = items(POLICY).map(lambda drawn: {"items": drawn, "page": 1})
# Wrong types where the item contract wants something else.
odd_values: st.SearchStrategy[Any] = st.sampled_from(
    [None, True, 0, -1, 1.5, 2**63, "", "x", [], {}, [None], [1], [[]], [{}], {"a": 1}]
)


@st.composite
def broken_items(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with one field of one item replaced, removed, or the item itself replaced."""
    document = copy.deepcopy(draw(valid_documents.filter(lambda d: d["items"])))
    index = draw(st.integers(0, len(document["items"]) - 1))
    target = document["items"][index]
    key = draw(st.sampled_from(["id", "categories", "signals", "signal_age_seconds", "inferred", None]))
    if key is None:
        document["items"][index] = draw(odd_values)
    elif draw(st.booleans()):
        target[key] = draw(odd_values)
    else:
        target.pop(key, None)
    return document


@st.composite
def wrong_containers(draw: st.DrawFn) -> Any:
    """Something other than a list at the items pointer, or no object around it at all."""
    return draw(
        st.one_of(
            st.builds(lambda value: {"items": value}, odd_values.filter(lambda v: not isinstance(v, list))),
            st.builds(lambda value: {"results": value}, json_values),
            json_values,
        )
    )


LITERALS = [
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"123456789012345678901234567890",
    b"1" * 400, b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b'"\\ud800"', b"\x00", b"null", b"[", b"{", b"]", b"}",
    b",", b":", b'"id":', b'"items":', b"\t", b"\xef\xbb\xbf",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, seed: st.SearchStrategy[Any]) -> bytes:
    """The serialized seed with a few bytes inserted, deleted, replaced, or the text cut short."""
    data = bytearray(orjson.dumps(draw(seed)))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        if action == "insert":
            data[position:position] = draw(st.sampled_from(LITERALS) | st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif action == "replace" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        else:
            del data[position:]
    return bytes(data)


def nested(depth: int, inner: bytes = b"[]") -> bytes:
    return b"[" * depth + inner + b"]" * depth


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """Nesting around the items, inside an item, or beside them, at depths on both sides of the limits
    of orjson's parser (1024) and serializer (255)."""
    depth = draw(st.sampled_from([1, 10, 253, 254, 255, 256, 300, 1022, 1023, 1024, 1025, 5000]))
    where = draw(st.sampled_from(["beside", "in an item", "around"]))
    if where == "beside":
        return b'{"items": [], "deep": ' + nested(depth) + b"}"
    if where == "in an item":
        return b'{"items": [{"id": "a", "categories": [], "signals": [], "extra": ' + nested(depth) + b"}]}"
    return nested(depth, b'{"items": []}')


def duplicate_keys() -> st.SearchStrategy[bytes]:
    return st.sampled_from(
        [
            b'{"items": [], "items": 5}',
            b'{"items": 5, "items": []}',
            b'{"items": [{"id": "a", "id": null, "categories": []}]}',
            b'{"items": [{"id": "a", "categories": [], "categories": "x"}]}',
            b'{"items": [{"id": "a", "signals": [], "signals": ["watch_history"], "categories": []}]}',
            b'{"guardrail": 1, "items": [], "guardrail": 2}',
        ]
    )


BODIES = st.one_of(
    valid_documents.map(orjson.dumps),
    broken_items().map(orjson.dumps),
    wrong_containers().map(orjson.dumps),
    mutated(valid_documents),
    json_values.map(orjson.dumps),
    deep(),
    duplicate_keys(),
    st.binary(max_size=64),
)


def _gzip_members(body: bytes) -> bytes:
    half = len(body) // 2
    return gzip.compress(body[:half]) + gzip.compress(body[half:])


# (Content-Encoding, how the body is really encoded): honest, and lies.
ENCODINGS: dict[str, tuple[bytes | None, Callable[[bytes], bytes]]] = {
    "none": (None, lambda body: body),
    "gzip": (b"gzip", gzip.compress),
    "GZIP with blanks": (b" GZIP ", gzip.compress),
    "deflate": (b"deflate", zlib.compress),
    "gzip that is not": (b"gzip", lambda body: body),
    "gzip cut short": (b"gzip", lambda body: gzip.compress(body)[:-6]),
    "gzip with trailing bytes": (b"gzip", lambda body: gzip.compress(body) + b"trailing"),
    "two gzip members": (b"gzip", _gzip_members),
    "gzip twice": (b"gzip", lambda body: gzip.compress(gzip.compress(body))),
    "deflate that is gzip": (b"deflate", gzip.compress),
    "raw deflate": (b"deflate", lambda body: zlib.compress(body, wbits=-15)),
    "two encodings": (b"gzip, identity", gzip.compress),
    "brotli": (b"br", lambda body: body),
    "identity": (b"identity", lambda body: body),
}


@examples(150)
@given(
    body=BODIES,
    encoding=st.sampled_from(sorted(ENCODINGS)),
    chunks=st.integers(1, 4),
    mode=st.sampled_from(MODES),
)
async def test_every_body_gets_a_defined_outcome(
    body: bytes, encoding: str, chunks: int, mode: tuple[str, str]
) -> None:
    header, encode = ENCODINGS[encoding]
    headers = [(b"content-encoding", header)] if header is not None else []
    await body_outcome(mode, RawUpstream(encode(body), headers, chunks))


@examples(60)
@given(body=st.one_of(valid_documents.map(orjson.dumps), mutated(valid_documents)), gzipped=st.booleans())
async def test_shadow_mode_never_changes_the_body(body: bytes, gzipped: bool) -> None:
    raw = gzip.compress(body) if gzipped else body
    headers = [(b"content-encoding", b"gzip")] if gzipped else []
    outcome = await body_outcome(("shadow", "closed"), RawUpstream(raw, headers, chunks=2))
    assert outcome.status == 200
    assert outcome.body == raw
    assert outcome.headers[b"guardrail-mode"] == b"shadow"


@examples(40)
@given(document=valid_documents, gzipped=st.booleans())
async def test_a_valid_body_is_always_checked(document: dict[str, Any], gzipped: bool) -> None:
    raw = orjson.dumps(document)
    headers = [(b"content-encoding", b"gzip")] if gzipped else []
    for mode in (("enforce", "closed"), ("enforce", "open")):
        outcome = await body_outcome(mode, RawUpstream(gzip.compress(raw) if gzipped else raw, headers))
        assert outcome.status == 200 and b"guardrail-degraded" not in outcome.headers
        shown = decoded(outcome)["items"]
        assert {entry["id"] for entry in shown} <= {entry["id"] for entry in document["items"]}


# -- found by the fuzzing above -------------------------------------------------------------------


@pytest.mark.parametrize("depth", [256, 300, 1000])
async def test_nesting_orjson_reads_but_cannot_write_fails_closed(depth: int) -> None:
    # orjson parses 1024 levels but serializes only 255: such a body used to end in an exception (500).
    body = b'{"items": [{"id": "a", "categories": [], "signals": []}], "deep": ' + nested(depth) + b"}"
    outcome = await body_outcome(("enforce", "closed"), RawUpstream(body))
    assert outcome.status == 502
    assert b"nested" in outcome.body
    passed = await body_outcome(("enforce", "open"), RawUpstream(body))
    assert passed.status == 200 and passed.body == body and passed.headers[b"guardrail-degraded"] == b"1"


GOOD = (
    b'{"items": [{"id": "a", "categories": ["movies"], "signals": []}, {"id": "b", "categories": [], "signals": []}]}'
)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        # The JSON is whole but the gzip trailer (checksum, length) is missing: it used to be checked and shown.
        pytest.param(gzip.compress(GOOD)[:-6], b"cut short", id="gzip-without-its-end"),
        pytest.param(gzip.compress(GOOD) + b"<html>", b"does not decompress", id="gzip-then-other-bytes"),
    ],
)
async def test_gzip_that_is_not_whole_fails_closed(raw: bytes, why: bytes) -> None:
    outcome = await body_outcome(("enforce", "closed"), RawUpstream(raw, [(b"content-encoding", b"gzip")]))
    assert outcome.status == 502
    assert why in outcome.body


async def test_a_gzip_body_of_several_members_is_read_whole() -> None:
    # RFC 1952 allows members one after the other; only the first one used to be read.
    raw = gzip.compress(GOOD[:40]) + gzip.compress(GOOD[40:])
    outcome = await body_outcome(("enforce", "closed"), RawUpstream(raw, [(b"content-encoding", b"gzip")]))
    assert outcome.status == 200
    assert [entry["id"] for entry in decoded(outcome)["items"]] == ["a", "b"]


# Values beside and inside the items: integers of every size (orjson reads those beyond 64 bits as floats).
exact_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(2**63, 2**200) | st.integers(-(2**200), -(2**63))
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@examples(60)
@given(document=valid_documents, beside=exact_values, inside=exact_values)
async def test_an_enforced_body_keeps_every_other_value_exactly(
    document: dict[str, Any], beside: Any, inside: Any
) -> None:
    """docs/architecture.md §2: integers of any size stay integers, strings stay the same after decoding."""
    for entry in document["items"]:
        entry["extra"] = inside
    raw = json.dumps({**document, "beside": beside}).encode()  # the stdlib writes integers of any size
    outcome = await body_outcome(("enforce", "closed"), RawUpstream(raw))
    assert outcome.status == 200 and b"guardrail-degraded" not in outcome.headers
    shown = json.loads(outcome.body)
    assert shown["beside"] == beside
    assert all(entry["extra"] == inside for entry in shown["items"])
    assert json.dumps(shown["beside"]) == json.dumps(beside)  # an integer stays an integer, not an equal float
