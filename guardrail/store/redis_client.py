"""A Redis store URL made into a redis-py client and the local cache's bounds (docs/architecture.md §6)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import __version__ as redis_version
from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from guardrail.errors import GuardrailError
from guardrail.store.cache import DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_SECONDS, StateCache

MAX_CONNECTIONS = 256  # per replica (per node on a cluster)
CHANGE_BUDGET = 1.0  # seconds: a user's change may wait longer than a read on the hot path

_CACHE_OPTIONS = {"cache_entries": int, "cache_seconds": float}


def cache_from_url(url: str) -> tuple[str, StateCache]:
    """(the URL without the cache options, the cache they describe)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    bounds: dict[str, float] = {}
    for name, value in query:
        kind = _CACHE_OPTIONS.get(name)
        if kind is None:
            continue
        try:
            bounds[name] = kind(value)
        except ValueError:
            bounds[name] = -1
        if bounds[name] < 0 or (kind is int and bounds[name] < 1):
            raise GuardrailError(
                f"store URL option {name}={value!r} is not valid; use a positive "
                f"{'whole number' if kind is int else 'number of seconds'}, e.g. {name}="
                f"{100_000 if kind is int else 60}"
            )
    rest = urlencode([(name, value) for name, value in query if name not in _CACHE_OPTIONS])
    cache = StateCache(
        max_entries=int(bounds.get("cache_entries", DEFAULT_CACHE_ENTRIES)),
        max_age=bounds.get("cache_seconds", DEFAULT_CACHE_SECONDS),
    )
    return urlunsplit(parts._replace(query=rest)), cache


def client_from_url(url: str, timeout: float) -> Any:
    """redis://, rediss://, and redis+cluster://host:port,host:port (rediss+cluster:// with TLS)."""
    # redis-py's defaults block for seconds and retry: here a call gets one try, and the budget of
    # each call is enforced around it (BudgetedCalls._call). The socket timeouts only bound what
    # runs outside a call (the invalidation listener, connecting under a burst), so they are the
    # longest budget any call has, not the 20 ms of a read on the request path.
    socket_timeout = max(timeout, CHANGE_BUDGET)
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 5,
    }
    parts = urlsplit(url)
    if parts.scheme.endswith("+cluster"):
        if not hasattr(RedisCluster, "pubsub"):  # every replica follows gr:invalidate through it
            raise GuardrailError(
                f"the store {parts.scheme}:// needs redis-py 8.0 or newer (its asyncio cluster client has "
                f"publish/subscribe from 8.0); this is redis-py {redis_version}: pip install 'redis[hiredis]>=8'"
            )
        nodes = []
        for address in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = address.rpartition(":")
            nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
        return RedisCluster(
            startup_nodes=nodes,
            ssl=parts.scheme.startswith("rediss"),
            username=parts.username,
            password=parts.password,
            max_connections=MAX_CONNECTIONS,
            **options,
        )
    # A burst of misses waits for a pooled connection (within each call's budget) instead of
    # failing at once when the pool is full, as redis-py's default pool does.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=socket_timeout, **options
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it too
