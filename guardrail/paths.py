"""How a request's path is read, whichever way it is spelled (docs/architecture.md §7 complete mediation).

A request's path is matched as the most lenient server would route it, so that no spelling of a guarded
route slips past: dot segments resolved (also spelled `%2e`, also `..;x` as servlets read it), repeated
slashes and `;` parameters ignored, letters percent-encoded or not, with or without a trailing slash,
and unless the policy says `case_insensitive_paths: false`, in any case (Unicode compatibility forms
and the letters that upper-case to ASCII, dotless i and long s, included). routes.py matches the names
read so against the policy's routes.

An encoded slash or backslash (`%2F`, `%5C`) and a bare backslash are separators to some servers and
data to others. Where that difference decides the route, or hides a `.` or `..` segment, nobody can
say which route the app will serve: the path is refused (`PathError`, a 400). Elsewhere (an id such
as `a%2Fb` under a guarded prefix, or in a path no route covers) they pass as sent.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

# Characters some servers read as a path separator besides `/`, once decoded.
_SEPARATORS = re.compile(rb"[/\\]")
# What a plain path needs no work to read: segments of letters, digits and `-_~`, dots inside them.
PLAIN_PATH = re.compile(rb"(?:/[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*)*/?")
_DOT_SEGMENTS = (b".", b"..")
# Characters a path's raw form keeps as they are when the guardrail writes it (RFC 3986 pchar less `;`).
PATH_SAFE = "/!$&'()*+,=:@~"
_SHOWN = 200  # characters of a refused path quoted back to the client


class PathError(ValueError):
    """A request path the guardrail refuses (400): servers disagree on what it names."""


class ResolvedPath(NamedTuple):
    """A request path with its dot segments resolved (RFC 3986 §5.2.4, a segment being a dot segment
    when its part before `;` decodes to `.` or `..`)."""

    raw: bytes  # what goes on when no route matches: resolved, otherwise as sent
    names: tuple[str, ...]  # decoded segment names: no empty segments, no `;` parameters
    raw_names: tuple[bytes, ...]  # the same names, percent-encoded as sent
    trailing_slash: bool
    split_names: tuple[str, ...] | None  # the names to a server that decodes the path first, if not `names`


def resolve_path(raw: bytes) -> ResolvedPath:
    """Resolve the dot segments of a raw path (it starts with `/`) as servlet containers, nginx and most
    path libraries do: each segment's name is its part before `;`, decoded; empty names are dropped, then
    `.` and `..` resolved (`/a//..` is `/`).

    Servers that decode the whole path first read more into it: `%2F`, `%5C` and a backslash are
    separators, a `;` decoded from `%3B` starts parameters. A dot segment they would see in what goes
    on is a `PathError`; the names they would see are `split_names`."""
    sent = raw
    segments = raw.split(b"/")[1:]
    kept: list[bytes] = []
    resolved = False
    for segment in segments:
        name = segment.partition(b";")[0]
        if not name:
            continue
        dots = _dot_segment(name)
        if not dots:
            kept.append(segment)
            continue
        resolved = True
        if dots == 2 and kept:
            kept.pop()
    last = segments[-1].partition(b";")[0]
    trailing_slash = bool(kept) and (not last or _dot_segment(last) > 0)  # `/a/b/..` is `/a/`
    if resolved:
        raw = b"/" + b"/".join(kept) + (b"/" if trailing_slash else b"")
    raw_names = tuple(segment.partition(b";")[0] for segment in kept)
    names = tuple(_decoded(name) for name in raw_names)
    split_names = None
    if b"%" in raw or b"\\" in raw:
        lowered = raw.lower()
        if b"\\" in raw or b"%2f" in lowered or b"%5c" in lowered or b"%3b" in lowered:
            split_names = _decoded_first(raw, sent)
            if split_names == names:
                split_names = None
    return ResolvedPath(raw, names, raw_names, trailing_slash, split_names)


def _decoded_first(raw: bytes, sent: bytes) -> tuple[str, ...]:
    """The segment names of a raw path with no dot segment left, to a server that decodes it first
    (`sent`: the path as the client sent it, for the error)."""
    names = []
    for piece in _SEPARATORS.split(unquote_to_bytes(raw))[1:]:
        name = piece.partition(b";")[0]
        if name in _DOT_SEGMENTS:
            raise PathError(
                f"The path {shown(sent)} has a '.' or '..' segment behind an encoded slash (%2F), an "
                "encoded backslash (%5C), a backslash or an encoded semicolon (%3B), which servers read in "
                "different ways. Send the path with its dot segments resolved."
            )
        if name:
            names.append(name.decode("utf-8", "surrogateescape"))
    return tuple(names)


def _decoded(raw_name: bytes) -> str:
    return (unquote_to_bytes(raw_name) if b"%" in raw_name else raw_name).decode("utf-8", "surrogateescape")


def forwardable(raw: bytes) -> bytes:
    """A raw path safe to join under a prefix: no dot segment left to climb out of it (see `resolve_path`)."""
    if raw[:1] != b"/" or (b"/." not in raw and b"%" not in raw and b"\\" not in raw):
        return raw
    return resolve_path(raw).raw


def _dot_segment(name: bytes) -> int:
    """1 for `.`, 2 for `..` (also percent-encoded), else 0."""
    if b"%" in name:
        if len(name) > 6:
            return 0
        name = unquote_to_bytes(name)
    return _DOT_SEGMENTS.index(name) + 1 if name in _DOT_SEGMENTS else 0


def fold_case(name: str) -> str:
    """A segment as a case-insensitive server might compare it: compatibility forms unified (NFKC),
    then upper-cased (dotless i U+0131 and long s U+017F become I and S) and lower-cased."""
    if name.isascii():
        return name.lower()
    return unicodedata.normalize("NFKC", name).upper().lower()


def keep_case(name: str) -> str:
    """A segment as a case-sensitive server compares it (`case_insensitive_paths: false`)."""
    return name


def shown(raw: bytes) -> str:
    """A refused path as the error quotes it back to the client: shortened when long."""
    text = raw.decode("ascii", "replace")
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")
