"""Changes to controls are rate-limited per user (issue 4), with the `limits` library, on the
configured store: in memory for `memory://`, in Redis (shared by every replica) for Redis."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from typing import Any

from limits import parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

logger = logging.getLogger("guardrail")
LIMITER_BUDGET = 0.25  # seconds; past it the change goes on (and meets the store's own budget)


class ChangeLimiter:
    def __init__(self, limit: str, store: object = None) -> None:
        self.item = parse(limit)
        storage: Storage = MemoryStorage()
        url = getattr(store, "url", None)
        if isinstance(url, str) and url.startswith(("redis", "rediss")):
            options: dict[str, Any] = {"implementation": "redispy"}
            pool = getattr(getattr(store, "client", None), "connection_pool", None)
            if pool is not None:
                # The store's own connections: closed with the store, and within its pool size.
                options["connection_pool"] = pool
            shared = storage_from_string(f"async+{url}", **options)
            assert isinstance(shared, Storage)  # "async+" URLs give the asyncio storages
            storage = shared
        self.limiter = MovingWindowRateLimiter(storage)

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
