"""User state storage behind one small async protocol; backends are chosen by URL scheme.

`__all__` holds the protocol and every type its signatures name (tests/store/test_protocol.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from guardrail.errors import GuardrailError
from guardrail.metrics import Metrics
from guardrail.optional import require
from guardrail.review import Overlay, QueueEntry, ReviewDecision, Sighting
from guardrail.state import REPORT_REASONS, REPORTS_PER_USER, ControlsPatch, Report, UserState
from guardrail.store.base import DecisionRecord, ItemRecord, Store
from guardrail.store.memory import MemoryStore
from guardrail.store.review_base import OverlayListener, ReviewQueue

if TYPE_CHECKING:
    from limits.aio.storage import Storage as RateLimitStorage

    from guardrail.tracing import Tracing

__all__ = [
    "REPORTS_PER_USER",
    "REPORT_REASONS",
    "ControlsPatch",
    "DecisionRecord",
    "ItemRecord",
    "MemoryStore",
    "Metrics",
    "Overlay",
    "OverlayListener",
    "QueueEntry",
    "RateLimitStorage",
    "Report",
    "ReviewDecision",
    "ReviewQueue",
    "Sighting",
    "Store",
    "UserState",
    "create_store",
]


def __getattr__(name: str) -> Any:
    # `limits` is imported only when asked for: it takes longer to import than the rest of guardrail.
    if name == "RateLimitStorage":
        from limits.aio.storage import Storage

        return Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _memory(url: str, *, timeout: float, tracing: Tracing | None, **options: Any) -> Store:
    return MemoryStore(**options)  # no I/O: nothing to trace


def _redis(url: str, **options: Any) -> Store:
    require("redis", feature=f"the store {urlsplit(url).scheme}://")
    from guardrail.store.redis import RedisStore  # redis-py is imported only when used

    return RedisStore.from_url(url, **options)


# Chosen by URL scheme, in a plain dict (like `limits`); redis+cluster://h:p,h:p is Redis Cluster.
BACKENDS: dict[str, Callable[..., Store]] = {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
    "redis+cluster": _redis,
    "rediss+cluster": _redis,
}


def create_store(
    url: str,
    *,
    metrics: Metrics | None = None,
    decisions_per_user: int = 50,
    retention: timedelta = timedelta(days=7),
    timeout: float = 0.02,
    tracing: Tracing | None = None,
) -> Store:
    """A store for a URL: `memory://`, `redis://host:port/db`, `rediss://...`, `redis+cluster://h:p,h:p`.
    `metrics` is where it counts cache lookups, store errors and dropped decision records (None: not
    counted); `timeout` is the budget of one store call on the request path, in seconds; `tracing`:
    where a Redis store's calls for a request are spans (`guardrail.tracing.tracing_for()`), None: not traced."""
    scheme = urlsplit(url).scheme
    factory = BACKENDS.get(scheme)
    if factory is None:
        raise GuardrailError(f"unknown store URL {url!r}; use one of: {', '.join(f'{s}://' for s in BACKENDS)}")
    return factory(
        url,
        metrics=metrics,
        decisions_per_user=decisions_per_user,
        retention=retention,
        timeout=timeout,
        tracing=tracing,
    )
