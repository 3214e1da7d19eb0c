"""Which requests are guarded, and where their items are (docs/architecture.md §2, §5 `routes`, §7 complete mediation).

A request's path is matched as the most lenient server would route it, so that no spelling of a guarded
route slips past: dot segments resolved (also spelled `%2e`, also `..;x` as servlets read it), repeated
slashes and `;` parameters ignored, letters percent-encoded or not, with or without a trailing slash,
and unless the policy says `case_insensitive_paths: false`, in any case (Unicode compatibility forms
and the letters that upper-case to ASCII, dotless i and long s, included). A matched request goes on with the
path it matched (the route's own spelling), so the app serves what was checked, whatever its routing.

An encoded slash or backslash (`%2F`, `%5C`) and a bare backslash are separators to some servers and
data to others. Where that difference decides the route, or hides a `.` or `..` segment, nobody can
say which route the app will serve: the path is refused (`PathError`, a 400). Elsewhere (an id such
as `a%2Fb` under a guarded prefix, or in a path no route covers) they pass as sent.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote, unquote_to_bytes

from guardrail.policy.models import Fields, NonPersonalized, Route

# Where the guardrail states its GPC support (W3C GPC); served with the API.
GPC_PATH = "/.well-known/gpc.json"
# Characters some servers read as a path separator besides `/`, once decoded.
_SEPARATORS = re.compile(rb"[/\\]")
# What a plain path needs no work to read: segments of letters, digits and `-_~`, dots inside them.
_PLAIN = re.compile(rb"(?:/[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*)*/?")
_DOT_SEGMENTS = (b".", b"..")
# Characters a path's raw form keeps as they are when the guardrail writes it (RFC 3986 pchar less `;`).
_PATH_SAFE = "/!$&'()*+,=:@~"
_SHOWN = 200  # characters of a refused path quoted back to the client


class PointerError(ValueError):
    pass


class PathError(ValueError):
    """A request path the guardrail refuses (400): servers disagree on what it names."""


@dataclass(frozen=True, slots=True)
class GuardedRoute:
    template: str  # the policy's `path`, used as the `route` metric label
    methods: frozenset[str]
    pointer: tuple[str, ...]
    fields: Fields
    default_signals: tuple[str, ...]
    non_personalized: NonPersonalized | None


class Reserved:
    """A path the guardrail answers itself, whoever asks and however spelled."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


API = Reserved("the guardrail's API")
GPC = Reserved("the GPC support statement")
Target = GuardedRoute | Reserved | None
# A new (path, raw_path) for the request, when it must go on with another spelling than it came with.
Forward = tuple[str, bytes] | None


class ResolvedPath(NamedTuple):
    """A request path with its dot segments resolved (RFC 3986 §5.2.4, a segment being a dot segment
    when its part before `;` decodes to `.` or `..`)."""

    raw: bytes  # what goes on when no route matches: resolved, otherwise as sent
    names: tuple[str, ...]  # decoded segment names: no empty segments, no `;` parameters
    raw_names: tuple[bytes, ...]  # the same names, percent-encoded as sent
    trailing_slash: bool
    split_names: tuple[str, ...] | None  # the names to a server that decodes the path first, if not `names`


@dataclass(frozen=True, slots=True)
class _Entry:
    """What answers a path, and how the policy spells the part of the path it covers."""

    target: GuardedRoute | Reserved
    raw: bytes  # percent-encoded: an exact path whole; a prefix's whole segments (`/feed/*`: `/feed`)
    depth: int  # how many segments of a request `raw` stands for; -1: all of them (an exact path)
    start: str = ""  # a prefix: what the key of every path it covers, and a `/`, starts with


class RouteTable:
    """The policy's routes and the guardrail's own paths, matched on every spelling of a path.

    Paths are compared by key: `/` and the folded segment names, without empty ones, joined by `/`
    (a `/` inside a name, decoded from `%2F`, stays apart as `%2F`)."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        case_insensitive: bool = True,
        api_prefix: str | None = None,
    ) -> None:
        self._insensitive = case_insensitive
        self._fold: Callable[[str], str] = _fold if case_insensitive else _same
        # The path each exact route is spelled as in the policy, and the GPC statement's: one dict
        # lookup and one comparison find them when they come spelled so, as nearly all requests do.
        self._plain: dict[str, _Entry] = {}
        self._exact: dict[str, _Entry] = {}
        self._prefixes: list[_Entry] = []
        self._api: _Entry | None = None
        if api_prefix is not None:
            self._api = self._prefix(api_prefix + "/", API)
            self._add_exact(GPC_PATH, GPC)
        for route in routes:
            guarded = GuardedRoute(
                template=route.path,
                methods=frozenset(route.methods),
                pointer=parse_pointer(route.items),
                fields=route.fields,
                default_signals=tuple(route.default_signals),
                non_personalized=route.non_personalized,
            )
            if route.path.endswith("*"):
                self._prefixes.append(self._prefix(route.path[:-1], guarded))
            else:
                self._add_exact(route.path, guarded)
        # The longest prefix wins, as a reader of the policy would expect.
        self._prefixes.sort(key=lambda prefix: len(prefix.start), reverse=True)

    def _key(self, names: Iterable[str]) -> str:
        fold = self._fold
        return "/" + "/".join(fold(name).replace("%", "%25").replace("/", "%2F") for name in names)

    def _add_exact(self, path: str, target: GuardedRoute | Reserved) -> None:
        entry = _Entry(target, quote(path, safe=_PATH_SAFE).encode("ascii"), -1)
        key = self._key(name for name in path.split("/") if name)
        self._exact.setdefault(key, entry)  # of two routes the same but for case, the first
        if self._api is None or not (key + "/").startswith(self._api.start):
            self._plain.setdefault(path, entry)

    def _prefix(self, path: str, target: GuardedRoute | Reserved) -> _Entry:
        whole, _, partial = path.rpartition("/")
        segments = [name for name in whole.split("/") if name]
        start = self._key([*segments, partial]) if partial else self._key(segments).rstrip("/") + "/"
        return _Entry(target, quote(whole, safe=_PATH_SAFE).encode("ascii"), len(segments), start)

    # -- matching -----------------------------------------------------------------------------

    def find(self, path: str, raw_path: bytes | None, method: str) -> tuple[Target, Forward]:
        """What answers this request, and the (path, raw_path) it goes on with if not those it came with.

        `path` and `raw_path` are the ASGI scope's (decoded, and as sent). Raises `PathError` for a
        path whose route depends on how a server reads an encoded slash."""
        plain = self._plain.get(path)
        if plain is not None and raw_path == plain.raw:
            if isinstance(plain.target, GuardedRoute) and method not in plain.target.methods:
                return None, None
            return plain.target, None
        raw = raw_path if raw_path is not None else quote(path, safe=_PATH_SAFE + ";").encode("ascii")
        if raw[:1] != b"/":
            return None, None  # `OPTIONS *`: no path to route
        if _PLAIN.fullmatch(raw):
            return self._find_plain(raw, method)
        resolved = resolve_path(raw)
        found = self._lookup(self._key(resolved.names), method)
        if resolved.split_names is not None:
            split = self._lookup(self._key(resolved.split_names), method)
            if _answering(split) is not _answering(found):
                raise PathError(
                    f"The path {_shown(raw)} has an encoded slash (%2F), an encoded backslash (%5C), a "
                    "backslash or an encoded semicolon (%3B) that decides which part of the service answers "
                    "it, and servers read those in different ways. Send the path without it."
                )
        return _going_on(found, resolved, raw)

    def _find_plain(self, raw: bytes, method: str) -> tuple[Target, Forward]:
        """`find` for a path with no dot segment, `;`, `%`, `\\` or `//`: its key is the path itself,
        folded, without a trailing slash."""
        text = raw.decode("ascii")
        found = self._lookup("/" + (text.lower() if self._insensitive else text).strip("/"), method)
        if found is None:
            return None, None
        cut = len(found.raw)
        if found.depth >= 0 and raw[:cut].lower() == found.raw.lower():
            # Under a prefix: the part it covers spelled as in the policy, the rest as it came.
            forward = found.raw + raw[cut:]
            return found.target, None if forward == raw else (forward.decode("ascii"), forward)
        return _going_on(found, ResolvedPath(raw, tuple(text.split("/")[1:]), (), raw.endswith(b"/"), None), raw)

    def match(self, path: str, method: str) -> GuardedRoute | None:
        """The guarded route of a request for this (decoded) path, if any."""
        target, _ = self.find(path, None, method)
        return target if isinstance(target, GuardedRoute) else None

    def _lookup(self, key: str, method: str) -> _Entry | None:
        if self._api is not None and (key + "/").startswith(self._api.start):
            return self._api
        found = self._exact.get(key)
        if found is None:
            covered = key + "/"
            for prefix in self._prefixes:
                if covered.startswith(prefix.start):
                    found = prefix
                    break
        if found is not None and isinstance(found.target, GuardedRoute) and method not in found.target.methods:
            return None
        return found


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
                f"The path {_shown(sent)} has a '.' or '..' segment behind an encoded slash (%2F), an "
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


def _answering(found: _Entry | None) -> Target:
    return found.target if found is not None else None


def _going_on(found: _Entry | None, resolved: ResolvedPath, raw: bytes) -> tuple[Target, Forward]:
    """(what answers, the new spelling of the request if it is not `raw`)."""
    forward = resolved.raw if found is None else _spelled(found, resolved)
    if forward == raw:
        return _answering(found), None
    return _answering(found), (unquote_to_bytes(forward).decode("utf-8", "replace"), forward)


def _spelled(found: _Entry, resolved: ResolvedPath) -> bytes:
    """The raw path a matched request goes on with: the part it matched spelled as the policy spells
    it, then the rest of the resolved path, its names as sent."""
    if found.depth < 0:
        return found.raw
    raw_names = resolved.raw_names or tuple(name.encode("ascii") for name in resolved.names if name)
    rest = b"".join(b"/" + name for name in raw_names[found.depth :])
    slash = b"/" if resolved.trailing_slash and (rest or found.raw) else b""
    return found.raw + rest + slash or b"/"


def _dot_segment(name: bytes) -> int:
    """1 for `.`, 2 for `..` (also percent-encoded), else 0."""
    if b"%" in name:
        if len(name) > 6:
            return 0
        name = unquote_to_bytes(name)
    return _DOT_SEGMENTS.index(name) + 1 if name in _DOT_SEGMENTS else 0


def _fold(name: str) -> str:
    """A segment as a case-insensitive server might compare it: compatibility forms unified (NFKC),
    then upper-cased (dotless i U+0131 and long s U+017F become I and S) and lower-cased."""
    if name.isascii():
        return name.lower()
    return unicodedata.normalize("NFKC", name).upper().lower()


def _same(name: str) -> str:
    return name


def _shown(raw: bytes) -> str:
    text = raw.decode("ascii", "replace")
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901: `/items` → ("items",); `` → () (the whole document)."""
    if pointer == "":
        return ()
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/"))


def resolve(document: Any, pointer: tuple[str, ...]) -> tuple[Any, Any, Any]:
    """(container, key, value) of what the pointer names; container is None for the root."""
    container: Any = None
    key: Any = None
    value = document
    for token in pointer:
        container = value
        if isinstance(value, dict):
            if token not in value:
                raise PointerError(f"no key {token!r}")
            key = token
        elif isinstance(value, list):
            if not token.isdigit() or int(token) >= len(value):
                raise PointerError(f"no index {token!r}")
            key = int(token)
        else:
            raise PointerError(f"cannot look up {token!r} in a {type(value).__name__}")
        value = container[key]
    return container, key, value
