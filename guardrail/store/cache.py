"""A bounded local cache of user state, in front of a remote store (docs/architecture.md §6).

LRU with a maximum age. Concurrent misses for one user share one fetch. The owner drops entries
when the invalidation channel says a user changed, and drops everything (and stops trusting the
cache) when that channel is lost: a cached state is never trusted stale.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from guardrail.state import UserState

Fetch = Callable[[str], Awaitable[UserState | None]]
# What one replica keeps: at a few hundred bytes per entry, 100,000 users take tens of MB
# (benchmarks/memory.py measures it). Store URLs change them: ?cache_entries=...&cache_seconds=...
DEFAULT_CACHE_ENTRIES = 100_000
DEFAULT_CACHE_SECONDS = 60.0


class StateCache:
    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES, max_age: float = DEFAULT_CACHE_SECONDS) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.trusted = True  # False while the invalidation channel is down
        self._entries: OrderedDict[str, tuple[float, UserState | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[UserState | None]] = {}
        self._generation = 0  # bumped by every invalidation, so a fetch racing one is not cached
        # Entries fetched before this moment are not served: `clear()` moves it instead of
        # deleting them, so that `last_known` still has them for `fail_mode: open`.
        self._valid_after = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user: str) -> tuple[bool, UserState | None]:
        """(hit, state). A hit may be a user with no state (None)."""
        if not self.trusted:
            return False, None
        entry = self._entries.get(user)
        if entry is None or entry[0] <= self._valid_after or time.monotonic() - entry[0] > self.max_age:
            return False, None
        self._entries.move_to_end(user)
        return True, entry[1]

    def last_known(self, user: str) -> UserState | None:
        """The cached state whatever its age: for `fail_mode: open` when the store is down."""
        entry = self._entries.get(user)
        return entry[1] if entry is not None else None

    async def fetch(self, user: str, fetch: Fetch) -> tuple[bool, UserState | None]:
        """(coalesced, state): one fetch per user at a time; the others wait for its answer."""
        pending = self._inflight.get(user)
        if pending is not None:
            return True, await asyncio.shield(pending)
        future: asyncio.Future[UserState | None] = asyncio.get_running_loop().create_future()
        self._inflight[user] = future
        generation = self._generation
        try:
            state = await fetch(user)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            self._inflight.pop(user, None)
        future.set_result(state)
        # A fetch that raced an invalidation (or ran while the channel was down) may be stale
        # already: kept as the last known state, but never served as a hit.
        servable = generation == self._generation and self.trusted
        self.put(user, state, servable=servable)
        return False, state

    def put(self, user: str, state: UserState | None, *, servable: bool = True) -> None:
        self._entries[user] = (time.monotonic() if servable else float("-inf"), state)
        self._entries.move_to_end(user)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, user: str) -> None:
        self._generation += 1
        self._entries.pop(user, None)

    def clear(self) -> None:
        """Serve nothing cached so far (it may have missed an invalidation)."""
        self._generation += 1
        self._valid_after = time.monotonic()
