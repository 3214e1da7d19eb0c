"""The one bounded cache: what the guardrail remembers about inputs it does not choose.

Headers, categories, item shapes and tokens come from clients and upstreams, so every memo of them
has a size limit and one eviction rule: **when a new key comes to a full cache, the oldest entry
goes** (first in, first out). Hits cost one dict lookup in C; nothing is reordered on a hit, so a
hit never writes. The user-state cache of the stores (guardrail/store/cache.py) is the exception:
it expires entries by age and keeps the most recently used, as a cache of data that changes must.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar, cast

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()


class Memoized(Protocol[K, V]):
    """A function of one hashable argument whose results are kept in `cache`."""

    cache: BoundedCache[K, V]

    def __call__(self, key: K, /) -> V: ...


class BoundedCache(Generic[K, V]):
    """A dict of at most `size` entries, the oldest going first when it is full.

    `get(key)` is the dict's own method (None, or a default, when absent); `put(key, value)` stores
    and returns `value`. `data` is the dict itself, for C code that looks up entries directly (its
    writes go through `put`)."""

    __slots__ = ("data", "get", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a bounded cache holds at least one entry, not {size}")
        self.data: dict[K, V] = {}
        self.get = self.data.get
        self.size = size

    def put(self, key: K, value: V) -> V:
        data = self.data
        if len(data) >= self.size and key not in data:
            del data[next(iter(data))]  # dicts keep insertion order: the first key is the oldest
        data[key] = value
        return value

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def clear(self) -> None:
        self.data.clear()

    @classmethod
    def memoize(cls, size: int, function: Callable[[K], V]) -> Memoized[K, V]:
        """`function` of one hashable argument, its results kept in a `BoundedCache` of `size`."""
        cache: BoundedCache[K, V] = cls(size)
        get, put = cache.data.get, cache.put

        def memoized(key: K) -> V:
            found = get(key, _MISSING)
            if found is _MISSING:
                return put(key, function(key))
            return found  # type: ignore[return-value]

        memoized.cache = cache  # type: ignore[attr-defined]
        return cast(Memoized[K, V], memoized)
