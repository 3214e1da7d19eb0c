"""What a guarded route asks the upstream for, and what a guarded answer says about caching (docs/architecture.md §4).

The guardrail can check a whole JSON body in an encoding it decodes, so that is all a guarded route asks
the upstream for, whatever the client asked: `Accept` names JSON only, `Accept-Encoding` only codings the
guardrail decodes, and no range or precondition travels (a 206 or a 304 carries no page to check, and a
304 would let a client keep a page checked for someone else, or before a control changed).

An enforced body is made for one user, at one moment: it goes out `private, no-store`, without the
upstream's validators, dates and digests (they describe the upstream's bytes, shared by everyone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.types import Scope

from guardrail.caching import BoundedCache

DECODABLE_CODINGS = frozenset({b"gzip", b"x-gzip", b"deflate", b"identity"})
JSON_ONLY = b"application/json"
IDENTITY = b"identity"
# Never forwarded on a guarded route: a range or a delta (RFC 3229) is not the page, and a cached copy
# (If-None-Match, If-Modified-Since) is the page as it was checked for somebody, some time ago. The
# client's Accept and Accept-Encoding are replaced, not forwarded.
_NOT_FORWARDED = frozenset(
    {b"range", b"if-range", b"if-none-match", b"if-modified-since", b"a-im", b"accept", b"accept-encoding"}
)
# On a GET or HEAD, If-Match and If-Unmodified-Since can only turn the page into a 412; on other
# methods they guard a write (RFC 9110 §13.1.1) and reach the upstream.
_NOT_FORWARDED_ON_READS = _NOT_FORWARDED | {b"if-match", b"if-unmodified-since"}
_READS = frozenset({"GET", "HEAD"})
# Read in the middleware's one pass over the request headers (the first value of each, see `upstream_scope`).
REQUEST_HEADERS = _NOT_FORWARDED_ON_READS
# What the upstream says about its answer as a shared, cacheable, whole thing.
_CACHING = frozenset({b"cache-control", b"etag", b"last-modified", b"expires", b"accept-ranges"})
# What describes the upstream's exact bytes, which an enforced body is not.
_OF_THE_BYTES = frozenset({b"content-length", b"content-md5", b"digest", b"content-digest", b"repr-digest"})
_NOT_IN_AN_ENFORCED_BODY = _CACHING | _OF_THE_BYTES
PRIVATE = (b"cache-control", b"private, no-store")
# What the upstream is asked for when the client named none of those headers.
_WHEN_NOT_SAID = ((b"accept", JSON_ONLY), (b"accept-encoding", IDENTITY))
# Distinct Accept and Accept-Encoding values whose answer is kept: clients send a handful.
HEADER_VALUES_KEPT = 256


def upstream_scope(scope: Scope, first: Mapping[bytes, bytes], *, extra: tuple[bytes, bytes]) -> Scope:
    """The scope of a guarded request as the upstream gets it, `extra` the last header (the headers are
    copied once). `first` holds the first value of each of `REQUEST_HEADERS` the client sent: repeated
    lines are dropped with the rest, so they smuggle nothing."""
    if REQUEST_HEADERS.isdisjoint(first):
        headers = [*scope["headers"], *_WHEN_NOT_SAID, extra]
    else:
        dropped = _NOT_FORWARDED_ON_READS if scope["method"] in _READS else _NOT_FORWARDED
        headers = [header for header in scope["headers"] if header[0] not in dropped]
        headers.append((b"accept", json_accept(first.get(b"accept"))))
        headers.append((b"accept-encoding", decodable_accept_encoding(first.get(b"accept-encoding"))))
        headers.append(extra)
    return {**scope, "headers": headers}


def _json_accept(value: bytes | None) -> bytes:
    """The client's Accept if it names only JSON types (a JSON:API server insists on its own), else
    `application/json`: the guardrail can check nothing else, so asking for anything else only fails."""
    return value if value is not None and _names_only_json(value) else JSON_ONLY


def _decodable_accept_encoding(value: bytes | None) -> bytes:
    """The codings of the client's Accept-Encoding that the guardrail decodes, else `identity`.
    Without the header any coding would do (RFC 9110 §12.5.3), so it is never left out."""
    kept = [token for token in _tokens(value) if _coding(token) in DECODABLE_CODINGS and not _refused(token)]
    return b", ".join(kept) if kept else IDENTITY


json_accept = BoundedCache.memoize(HEADER_VALUES_KEPT, _json_accept)
decodable_accept_encoding = BoundedCache.memoize(HEADER_VALUES_KEPT, _decodable_accept_encoding)


def _is_json(media_type: bytes) -> bool:
    """`application/json`, `text/json` or any `+json` type, parameters and case aside."""
    media = media_type.split(b";", 1)[0].strip().lower()
    return media in (b"application/json", b"text/json") or media.endswith(b"+json")


# Content-Type values: an upstream sends a handful; Accept's media ranges come from clients.
is_json = BoundedCache.memoize(HEADER_VALUES_KEPT, _is_json)


def enforced_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers for a body the guardrail rewrote for one user (its length aside)."""
    kept = [header for header in headers if header[0] not in _NOT_IN_AN_ENFORCED_BODY]
    kept.append(PRIVATE)
    return kept


def private_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers, for its own bytes that nobody may keep or share."""
    kept = [header for header in headers if header[0] not in _CACHING]
    kept.append(PRIVATE)
    return kept


def _names_only_json(accept: bytes) -> bool:
    ranges = _tokens(accept)
    return bool(ranges) and all(is_json(media_range) for media_range in ranges)


def _tokens(value: bytes | None) -> list[bytes]:
    if value is None:
        return []
    return [token.strip() for token in value.split(b",") if token.strip()]


def _coding(token: bytes) -> bytes:
    return token.split(b";", 1)[0].strip().lower()


def _refused(token: bytes) -> bool:
    """Whether a coding comes with `q=0`: the client refuses it."""
    for parameter in token.split(b";")[1:]:
        name, _, weight = parameter.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                return float(weight.strip()) == 0
            except ValueError:
                return False
    return False
