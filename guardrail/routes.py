"""Which requests are guarded, and where their items are (docs/architecture.md §2, §5 `routes`, §7 complete mediation).

A request's path is matched on every spelling of it that a server could route (paths.py says how a
path is read); a matched request goes on with the path it matched (the route's own spelling), so the app
serves what was checked, whatever its routing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from guardrail.paths import PATH_SAFE, PLAIN_PATH, PathError, ResolvedPath, fold_case, keep_case, resolve_path, shown
from guardrail.pointer import parse_pointer
from guardrail.policy.models import Fields, NonPersonalized, Route

# Where the guardrail states its GPC support (W3C GPC); served with the API.
GPC_PATH = "/.well-known/gpc.json"
# The scope key under which the middleware tells the app which guarded route a request matched (its
# template): the sidecar's proxy counts its traffic by it, as a bounded label, never the raw path.
ROUTE_TEMPLATE = "guardrail.route"


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
        self._fold: Callable[[str], str] = fold_case if case_insensitive else keep_case
        # The path each exact route is spelled as in the policy, and the GPC statement's: one dict
        # lookup and one comparison find them when they come spelled so, as nearly all requests do.
        self._plain: dict[str, _Entry] = {}
        self._exact: dict[str, _Entry] = {}
        self._prefixes: list[_Entry] = []
        self._api: _Entry | None = None
        # Each guarded route by its `path` as the policy spells it, for in-process checks.
        self.guarded: dict[str, GuardedRoute] = {}
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
            self.guarded.setdefault(route.path, guarded)
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
        entry = _Entry(target, quote(path, safe=PATH_SAFE).encode("ascii"), -1)
        key = self._key(name for name in path.split("/") if name)
        self._exact.setdefault(key, entry)  # of two routes the same but for case, the first
        if self._api is None or not (key + "/").startswith(self._api.start):
            self._plain.setdefault(path, entry)

    def _prefix(self, path: str, target: GuardedRoute | Reserved) -> _Entry:
        whole, _, partial = path.rpartition("/")
        segments = [name for name in whole.split("/") if name]
        start = self._key([*segments, partial]) if partial else self._key(segments).rstrip("/") + "/"
        return _Entry(target, quote(whole, safe=PATH_SAFE).encode("ascii"), len(segments), start)

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
        raw = raw_path if raw_path is not None else quote(path, safe=PATH_SAFE + ";").encode("ascii")
        if raw[:1] != b"/":
            return None, None  # `OPTIONS *`: no path to route
        if PLAIN_PATH.fullmatch(raw):
            return self._find_plain(raw, method)
        resolved = resolve_path(raw)
        found = self._lookup(self._key(resolved.names), method)
        if resolved.split_names is not None:
            split = self._lookup(self._key(resolved.split_names), method)
            if _answering(split) is not _answering(found):
                raise PathError(
                    f"The path {shown(raw)} has an encoded slash (%2F), an encoded backslash (%5C), a "
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
