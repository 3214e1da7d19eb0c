"""Calls to Redis on the request path: one try each, within a time budget, behind a circuit breaker
(docs/architecture.md §6). Any failure becomes `StoreError`, which the caller answers by its fail mode."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from guardrail.errors import StoreError
from guardrail.metrics import Metrics
from guardrail.store.breaker import CircuitBreaker
from guardrail.store.redis_client import CHANGE_BUDGET

if TYPE_CHECKING:
    from guardrail.tracing import Tracing


class BudgetedCalls:
    """A redis-py client whose calls each get one try within a budget; `RedisStore` builds on it."""

    def __init__(
        self,
        client: Any,
        *,
        timeout: float,
        breaker: CircuitBreaker,
        metrics: Metrics | None,
        tracing: Tracing | None = None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.breaker = breaker
        self.metrics = metrics
        self.tracing = tracing
        self._connected = False
        self._connect_after = 0.0

    async def _call(self, op: str, awaitable: Any, *, budget: float | None = None) -> Any:
        """One store call within the time budget; any failure becomes StoreError. A call made for a
        traced request is a `guardrail.store` span; the background work (decision records, the
        invalidation channel) and health checks are in no trace, and make none."""
        tracing = self.tracing
        if tracing is not None and tracing.in_a_trace():
            with tracing.store_call(op, "redis"):
                return await self._within_budget(op, awaitable, budget)
        return await self._within_budget(op, awaitable, budget)

    async def _within_budget(self, op: str, awaitable: Any, budget: float | None) -> Any:
        if not self._connected and time.monotonic() >= self._connect_after:
            await self._connect()
        if not self.breaker.allow():
            _close(awaitable)
            self._count_error(op)
            raise StoreError(f"the store is not answering ({op} not attempted: circuit open)")
        started = time.perf_counter()
        # The call runs in a task of its own and is abandoned when the budget is spent: a
        # cancellation sent into redis-py can be swallowed there, and then the call would wait
        # for the socket timeout instead of the budget.
        task = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait({task}, timeout=budget or self.timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            task.add_done_callback(_retrieve)
            self.breaker.failure()
            self._count_error(op)
            raise StoreError(f"the store did not answer {op} in time")
        try:
            result = task.result()
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            self._count_error(op)
            raise StoreError(f"the store failed on {op}: {type(exc).__name__}") from None
        self.breaker.success()
        if self.metrics is not None:
            self.metrics.store_seconds.labels(op).observe(time.perf_counter() - started)
        return result

    async def _connect(self) -> None:
        # A cluster client learns the slot layout on first use: more than a hot-path budget.
        initialize = getattr(self.client, "initialize", None)
        if initialize is None:
            self._connected = True
            return
        try:
            async with asyncio.timeout(max(self.timeout, CHANGE_BUDGET)):
                await initialize()
        except (RedisError, OSError, TimeoutError):
            # The call that follows fails and is counted. Requests do not each wait for the
            # next attempt: it comes after a pause.
            self._connect_after = time.monotonic() + 2.0
            return
        self._connected = True

    def _count_error(self, op: str) -> None:
        if self.metrics is not None:
            self.metrics.store_errors.labels(op).inc()


def _retrieve(task: asyncio.Task[Any]) -> None:
    # An abandoned call's outcome is of no interest, but it must be retrieved or asyncio logs it.
    if not task.cancelled():
        task.exception()


def _close(awaitable: Any) -> None:
    # A coroutine that will not be awaited must be closed, or Python warns about it.
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
