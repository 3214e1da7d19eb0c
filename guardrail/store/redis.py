"""The Redis backend: shared, durable user state for many replicas (docs/architecture.md §6).

Keys (one user's keys share the hash tag `{u:<user>}`, so every user operation is single-slot
and works the same on Redis Cluster):

    gr:{u:<user>}     hash: the user's controls (see codec.py for the fields)
    gr:{u:<user>}:d   list: the user's decision records, newest first, capped and expiring
    gr:{u:<user>}:e   string: when the user last erased their data (epoch seconds), kept as long as
                      a record: a record made before then, written later, is refused

Reads go through a local cache (0 round trips on a hit, 1 on a miss, concurrent misses coalesced);
every change publishes the user on `gr:invalidate`, and every replica drops that user from its
cache. If the subscription is lost, the cache is cleared and bypassed until it is back.
Every call has a time budget and no retry loop; a circuit breaker stops waiting on a dead server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import __version__ as redis_version
from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from guardrail.errors import GuardrailError, StaleRevision, StoreError
from guardrail.metrics import Metrics
from guardrail.state import ControlsPatch, UserState
from guardrail.store.base import DecisionRecord
from guardrail.store.breaker import CircuitBreaker
from guardrail.store.cache import DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_SECONDS, StateCache
from guardrail.store.codec import decode_record, decode_state, encode_record, patch_ops

if TYPE_CHECKING:
    from limits.aio.storage import Storage

logger = logging.getLogger("guardrail.store")

CHANNEL = "gr:invalidate"
MAX_QUEUED_RECORDS = 10_000
FLUSH_EVERY = 0.05  # seconds between decision-record batches
MAX_CONNECTIONS = 256  # per replica (per node on a cluster)
CHANGE_BUDGET = 1.0  # seconds: a user's change may wait longer than a read on the hot path
_LUA = resources.files("guardrail.store").joinpath("lua")


def controls_key(user: str) -> str:
    # Braces inside a user id would move the hash tag: escape them (and the escape character).
    tag = user.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return f"gr:{{u:{tag}}}"


def records_key(user: str) -> str:
    return controls_key(user) + ":d"


def erased_key(user: str) -> str:
    """When the user last erased their data: records made before then are not written (erase.lua)."""
    return controls_key(user) + ":e"


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
    # each call is enforced around it (RedisStore._call). The socket timeouts only bound what
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


class RedisStore:
    def __init__(
        self,
        client: Any,
        *,
        timeout: float = 0.02,
        decisions_per_user: int = 50,
        retention: timedelta = timedelta(days=7),
        cache: StateCache | None = None,
        breaker: CircuitBreaker | None = None,
        metrics: Metrics | None = None,
        url: str | None = None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.decisions_per_user = decisions_per_user
        self.retention = retention
        self.cache = cache if cache is not None else StateCache()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.metrics = metrics
        # The server's URL (without the cache options): a client given without it is asked for no
        # more than the store's own calls, and the change rate limiter then counts in process.
        self.url = url
        self._rate_limit_storage: Storage | None = None
        self._patch = client.register_script(_LUA.joinpath("patch.lua").read_text())
        self._erase = client.register_script(_LUA.joinpath("erase.lua").read_text())
        self._record = client.register_script(_LUA.joinpath("record.lua").read_text())
        self._queue: deque[DecisionRecord] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening = False
        self._closed = False
        self._connected = False
        self._connect_after = 0.0
        self.subscribed = asyncio.Event()  # set while the invalidation channel is followed

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """The URL may end with the local cache's bounds, which redis-py does not see:
        `?cache_entries=100000&cache_seconds=60` (the defaults)."""
        url, cache = cache_from_url(url)
        kwargs.setdefault("cache", cache)  # a cache object given in code wins
        return cls(client_from_url(url, kwargs.get("timeout", 0.02)), url=url, **kwargs)

    def rate_limit_storage(self) -> Storage | None:
        if self.url is None:
            return None
        if self._rate_limit_storage is None:
            from limits.aio.storage import Storage
            from limits.storage import storage_from_string

            options: dict[str, Any] = {"implementation": "redispy"}
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                # The store's own connections: closed with the store, and within its pool size. A
                # cluster client has no single pool: there `limits` opens connections of its own.
                options["connection_pool"] = pool
            storage = storage_from_string(f"async+{self.url}", **options)
            assert isinstance(storage, Storage)  # "async+" URLs give the asyncio storages
            self._rate_limit_storage = storage
        return self._rate_limit_storage

    # -- reads ---------------------------------------------------------------------------------

    async def load(self, user: str) -> UserState | None:
        self._start_background()
        hit, state = self.cache.get(user)
        if hit:
            self._count_lookup("hit")
            return state
        coalesced, state = await self.cache.fetch(user, self._fetch)
        self._count_lookup("coalesced" if coalesced else ("miss" if self.cache.trusted else "bypass"))
        return state

    def last_known(self, user: str) -> UserState | None:
        return self.cache.last_known(user)

    async def _fetch(self, user: str) -> UserState | None:
        fields = await self._call("load", self.client.hgetall(controls_key(user)))
        return decode_state(fields)

    async def _call(self, op: str, awaitable: Any, *, budget: float | None = None) -> Any:
        """One store call within the time budget; any failure becomes StoreError."""
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

    # -- changes -------------------------------------------------------------------------------

    async def patch(self, user: str, patch: ControlsPatch, *, if_match: int | None, now: datetime) -> UserState:
        # The script refuses to run after this moment: a change the API reported as not saved
        # (the budget ran out while Redis was hung) must not land when Redis wakes up.
        deadline = time.time() + CHANGE_BUDGET
        args = [
            "" if if_match is None else str(if_match),
            repr(now.timestamp()),
            CHANNEL,
            user,
            repr(deadline),
            *patch_ops(patch),
        ]
        # A change is worth a longer wait than a read on the hot path, but still bounded.
        result = await self._call(
            "patch", self._patch(keys=[controls_key(user)], args=args), budget=max(self.timeout, CHANGE_BUDGET)
        )
        if result and result[0] == b"stale":
            raise StaleRevision(int(result[1]))
        if result and result[0] == b"late":
            self._count_error("patch")
            raise StoreError("the change reached the store after its deadline and was not applied")
        state = decode_state(dict(zip(result[::2], result[1::2], strict=True)))
        assert state is not None  # the script always writes the revision
        self.cache.invalidate(user)
        return state

    async def erase(self, user: str) -> None:
        keys = [controls_key(user), records_key(user), erased_key(user)]
        args = [CHANNEL, user, repr(time.time()), int(self.retention.total_seconds())]
        await self._call("erase", self._erase(keys=keys, args=args), budget=max(self.timeout, CHANGE_BUDGET))
        self.cache.invalidate(user)

    # -- decision records ----------------------------------------------------------------------

    def record(self, record: DecisionRecord) -> None:
        if len(self._queue) >= MAX_QUEUED_RECORDS:
            self._count_dropped(1)
            return
        self._queue.append(record)
        self._start_background()

    async def decisions(self, user: str, *, limit: int = 50) -> Sequence[DecisionRecord]:
        raw = await self._call("decisions", self.client.lrange(records_key(user), 0, limit - 1), budget=1.0)
        oldest = time.time() - self.retention.total_seconds()
        records = [decode_record(user, item) for item in raw]
        return [r for r in records if r.created_at >= oldest]

    async def decision(self, user: str, decision_id: str) -> DecisionRecord | None:
        for record in await self.decisions(user, limit=self.decisions_per_user):
            if record.id == decision_id:
                return record
        return None

    async def _flush_records(self) -> None:
        while not self._closed:
            await asyncio.sleep(FLUSH_EVERY)
            await self.flush()

    async def flush(self) -> None:
        """Write the queued decision records in one pipelined round trip."""
        if not self._queue:
            return
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), 500))]
        ttl = int(self.retention.total_seconds())
        calls = [(record.user, record.created_at, encode_record(record)) for record in batch]
        try:
            results = await self._call("record", self._write_records(calls, ttl), budget=1.0)
            if any(isinstance(result, NoScriptError) for result in results):
                # A restarted server forgets its scripts: load it again and write what failed.
                await self._call("record", self.client.script_load(self._record.script), budget=1.0)
                failed = [call for call, result in zip(calls, results, strict=True) if isinstance(result, Exception)]
                results = await self._call("record", self._write_records(failed, ttl), budget=1.0)
        except StoreError:
            # Receipts are best effort: counted, never retried into a growing backlog.
            self._count_dropped(len(batch))
            return
        dropped = sum(isinstance(result, Exception) for result in results)
        if dropped:
            self._count_dropped(dropped)

    async def _write_records(self, calls: list[tuple[str, float, bytes]], ttl: int) -> list[Any]:
        """One pipelined round trip; an error per record instead of an exception for the batch. The
        script, not the client, checks the erase marker: an erase landing at any moment wins."""
        pipe = self.client.pipeline(transaction=False)
        for user, created_at, record in calls:
            # (EVALSHA by hand: a Script object cannot join a cluster pipeline, the command can.)
            pipe.evalsha(
                self._record.sha,
                2,
                records_key(user),
                erased_key(user),
                record,
                self.decisions_per_user,
                ttl,
                repr(created_at),
            )
        return list(await pipe.execute(raise_on_error=False))

    # -- invalidation --------------------------------------------------------------------------

    def _start_background(self) -> None:
        if self._listening or self._closed:
            return
        self._listening = True
        for work in (self._listen(), self._flush_records()):
            task = asyncio.get_running_loop().create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _listen(self) -> None:
        """Follow the invalidation channel; while it is down, the cache is cleared and bypassed."""
        delay = 0.05
        while not self._closed:
            if not self._connected:
                await self._connect()
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                self.cache.clear()  # whatever happened while we were not listening is unknown
                self.cache.trusted = True
                self.subscribed.set()
                delay = 0.05
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self.cache.invalidate(message["data"].decode())
            except Exception as exc:
                if self.cache.trusted:
                    logger.warning("invalidation channel lost (%s); the user cache is off until it is back", exc)
                # Not trusted for hits any more; kept only as the last known state for fail_mode: open.
                self.cache.trusted = False
                self.subscribed.clear()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- health --------------------------------------------------------------------------------

    async def check(self) -> None:
        await self._call("check", self.client.ping(), budget=max(self.timeout, 0.5))

    async def aclose(self) -> None:
        self._closed = True
        with contextlib.suppress(StoreError):
            await self.flush()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.client.aclose()

    # -- metrics -------------------------------------------------------------------------------

    def _count_lookup(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.tally.add(self.metrics.cache_lookups.labels(result))

    def _count_error(self, op: str) -> None:
        if self.metrics is not None:
            self.metrics.store_errors.labels(op).inc()

    def _count_dropped(self, count: int) -> None:
        if self.metrics is not None:
            self.metrics.decision_records_dropped.inc(count)


def _retrieve(task: asyncio.Task[Any]) -> None:
    # An abandoned call's outcome is of no interest, but it must be retrieved or asyncio logs it.
    if not task.cancelled():
        task.exception()


def _close(awaitable: Any) -> None:
    # A coroutine that will not be awaited must be closed, or Python warns about it.
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
