"""Changes to controls are rate-limited per user (issue 4), with the `limits` library, where the
store says (`Store.rate_limit_storage`): in memory for `memory://`, in Redis (shared by every
replica) for Redis."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from guardrail.store import Store

logger = logging.getLogger("guardrail")
LIMITER_BUDGET = 0.25  # seconds; past it the change goes on (and meets the store's own budget)


class ChangeLimiter:
    def __init__(self, limit: str, store: Store | None = None) -> None:
        self.item = parse(limit)
        shared = store.rate_limit_storage() if store is not None else None
        self.limiter = MovingWindowRateLimiter(shared if shared is not None else MemoryStorage())

    async def retry_after(self, user: str) -> int | None:
        """None if the user may make a change now; else how many seconds until they may."""
        # The user id is hashed: it is a key in a shared store, and it need not be readable there.
        key = hashlib.sha256(user.encode()).hexdigest()[:32]
        try:
            async with asyncio.timeout(LIMITER_BUDGET):
                if await self.limiter.hit(self.item, "guardrail-controls", key):
                    return None
                stats = await self.limiter.get_window_stats(self.item, "guardrail-controls", key)
        except Exception as exc:
            # The change itself goes to the same store: if that is down, the user gets a 503 there.
            logger.warning("the change rate limiter could not count (%s); the change is let through", exc)
            return None
        return max(1, math.ceil(stats.reset_time - time.time()))
