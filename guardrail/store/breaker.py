"""A small circuit breaker: stop waiting on a store that keeps failing, and try it again soon."""

from __future__ import annotations

import time


class CircuitBreaker:
    """Closed: calls go through. After `failures` consecutive failures it opens: calls fail at once,
    without waiting for a timeout. After `reset_after` seconds one call is let through (half-open);
    its success closes the breaker, its failure opens it again. With the defaults traffic is back
    within about a second of the store answering again."""

    def __init__(self, failures: int = 3, reset_after: float = 0.5) -> None:
        self.failures = failures
        self.reset_after = reset_after
        self._count = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        if self._opened_at is None:
            return True
        if self._trial_running or time.monotonic() - self._opened_at < self.reset_after:
            return False
        self._trial_running = True
        return True

    def success(self) -> None:
        self._count = 0
        self._opened_at = None
        self._trial_running = False

    def failure(self) -> None:
        self._count += 1
        self._trial_running = False
        if self._count >= self.failures or self._opened_at is not None:
            self._opened_at = time.monotonic()
