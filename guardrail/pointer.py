"""JSON pointers (RFC 6901): where a guarded route's items are in its response body."""

from __future__ import annotations

from typing import Any


class PointerError(ValueError):
    """A pointer that names nothing in the document."""


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
