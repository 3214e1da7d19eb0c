"""User state storage behind one small async protocol; backends are chosen by URL scheme."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

from guardrail.errors import GuardrailError
from guardrail.store.base import DecisionRecord, ItemRecord, Store
from guardrail.store.memory import MemoryStore

__all__ = ["DecisionRecord", "ItemRecord", "MemoryStore", "Store", "create_store"]


def _memory(url: str, decisions_per_user: int, retention: timedelta) -> Store:
    return MemoryStore(decisions_per_user=decisions_per_user, retention=retention)


BACKENDS: dict[str, Callable[[str, int, timedelta], Store]] = {"memory": _memory}


def create_store(url: str, *, decisions_per_user: int = 50, retention: timedelta = timedelta(days=7)) -> Store:
    """A store for a URL such as `memory://`."""
    scheme = urlsplit(url).scheme
    factory = BACKENDS.get(scheme)
    if factory is None:
        raise GuardrailError(f"unknown store URL {url!r}; use one of: {', '.join(f'{s}://' for s in BACKENDS)}")
    return factory(url, decisions_per_user, retention)
