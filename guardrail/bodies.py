"""Reading an upstream body on a guarded route, and writing the checked one (docs/architecture.md §2)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from guardrail.speedups import native

# orjson reads an integer beyond 64 bits as a float (and cannot write one). Such an integer is a run of
# at least 19 digits (-9223372036854775809 is the first): a body with one is read and written by the
# stdlib, which keeps integers of any size exactly; every other body by orjson, which is much faster.
LONG_DIGIT_RUN = 19
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_DIGITS_ONLY = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))  # digits as 0, the rest blank


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


# How much of an item's title a decision record keeps (`fields: {title: ...}`), in characters.
TITLE_CHARS = 120


def item_titles(items: list[Any], field: str) -> list[str | None]:
    """Each item's title as a decision record keeps it: its `field` as text (a string, or a number's digits),
    at most TITLE_CHARS characters (a longer one cut, ending in "…"); None when it has none. The items are
    the checked ones, so each is an object."""
    return [_title(item.get(field)) for item in items]


def _title(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        text: str = value
    elif kind is int or kind is float:
        text = str(value)
    else:
        return None
    if len(text) > TITLE_CHARS:
        text = text[: TITLE_CHARS - 1] + "…"
    if not text.isascii():
        # A string made in process may hold a lone surrogate, which no JSON encoder writes.
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def has_digit_run_python(body: bytes, length: int) -> bool:
    """Whether `body` holds `length` ASCII digits in a row: the reference the C version is tested against."""
    return b"0" * length in body.translate(_DIGITS_ONLY)


# Bound once: every guarded body goes through it.
has_digit_run: Callable[[bytes, int], bool] = native.has_digit_run if native is not None else has_digit_run_python


def encode_body(body: bytes, encoding: bytes) -> bytes:
    if encoding in (b"gzip", b"x-gzip"):
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        return compressor.compress(body) + compressor.flush()
    if encoding == b"deflate":
        return zlib.compress(body, 6)
    return body
