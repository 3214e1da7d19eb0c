"""Which requests are guarded, and where their items are (design §2, §5 `routes`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guardrail.policy.models import Fields, NonPersonalized, Route


class PointerError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class GuardedRoute:
    template: str  # the policy's `path`, used as the `route` metric label
    methods: frozenset[str]
    pointer: tuple[str, ...]
    fields: Fields
    default_signals: tuple[str, ...]
    non_personalized: NonPersonalized | None


class RouteTable:
    def __init__(self, routes: Sequence[Route]) -> None:
        self._exact: dict[str, GuardedRoute] = {}
        self._prefixes: list[tuple[str, GuardedRoute]] = []
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
                self._prefixes.append((route.path[:-1], guarded))
            else:
                self._exact[route.path] = guarded
        # The longest prefix wins, as a reader of the policy would expect.
        self._prefixes.sort(key=lambda entry: len(entry[0]), reverse=True)

    def match(self, path: str, method: str) -> GuardedRoute | None:
        route = self._exact.get(path)
        if route is None:
            for prefix, candidate in self._prefixes:
                if path.startswith(prefix):
                    route = candidate
                    break
        if route is None or method not in route.methods:
            return None
        return route


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
