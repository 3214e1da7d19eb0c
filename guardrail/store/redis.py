"""The Redis backend: shared, durable user state for many replicas (docs/architecture.md §6).

Its keys are in redis_keys.py, the client a URL makes in redis_client.py, and the time budget and
circuit breaker around every call in redis_calls.py.

Reads go through a local cache (0 round trips on a hit, 1 on a miss, concurrent misses coalesced);
every change publishes the user on `gr:invalidate`, and every replica drops that user from its
cache. If the subscription is lost, the cache is cleared and bypassed until it is back.
Every call has a time budget and no retry loop; a circuit breaker stops waiting on a dead server.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from guardrail.errors import StaleRevision, StoreError
from guardrail.metrics import Metrics
from guardrail.state import REPORTS_PER_USER, ControlsPatch, Report, UserState
from guardrail.store.base import DecisionRecord
from guardrail.store.breaker import CircuitBreaker
from guardrail.store.cache import StateCache
from guardrail.store.codec import decode_record, decode_report, decode_state, encode_record, encode_report, patch_ops
from guardrail.store.redis_calls import BudgetedCalls
from guardrail.store.redis_client import CHANGE_BUDGET, cache_from_url, client_from_url
from guardrail.store.redis_keys import CHANNEL, REVIEW_MESSAGE, controls_key, erased_key, records_key, reports_key
from guardrail.store.review_redis import RedisReviewQueue

if TYPE_CHECKING:
    from limits.aio.storage import Storage

    from guardrail.tracing import Tracing

logger = logging.getLogger("guardrail.store")

MAX_QUEUED_RECORDS = 10_000
FLUSH_EVERY = 0.05  # seconds between decision-record batches
_LUA = resources.files("guardrail.store").joinpath("lua")


def _newest_first(report: Report) -> float:
    return -report.created_at


class RedisStore(BudgetedCalls):
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
        tracing: Tracing | None = None,
    ) -> None:
        super().__init__(
            client,
            timeout=timeout,
            breaker=breaker if breaker is not None else CircuitBreaker(),
            metrics=metrics,
            tracing=tracing,
        )
        self.decisions_per_user = decisions_per_user
        self.retention = retention
        self.cache = cache if cache is not None else StateCache()
        # The server's URL (without the cache options): a client given without it is asked for no
        # more than the store's own calls, and the change rate limiter then counts in process.
        self.url = url
        self._rate_limit_storage: Storage | None = None
        self._patch = client.register_script(_LUA.joinpath("patch.lua").read_text())
        self._erase = client.register_script(_LUA.joinpath("erase.lua").read_text())
        self._record = client.register_script(_LUA.joinpath("record.lua").read_text())
        self._report = client.register_script(_LUA.joinpath("report.lua").read_text())
        self._queue: deque[DecisionRecord] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening = False
        self._closed = False
        self.subscribed = asyncio.Event()  # set while the invalidation channel is followed
        self._review = RedisReviewQueue(self, metrics, start=self._start_background)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """The URL may end with the local cache's bounds, which redis-py does not see:
        `?cache_entries=100000&cache_seconds=60` (the defaults)."""
        url, cache = cache_from_url(url)
        kwargs.setdefault("cache", cache)  # a cache object given in code wins
        return cls(client_from_url(url, kwargs.get("timeout", 0.02)), url=url, **kwargs)

    def review_queue(self) -> RedisReviewQueue:
        return self._review

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
        keys = [controls_key(user), records_key(user), erased_key(user), reports_key(user)]
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

    # -- reports -------------------------------------------------------------------------------

    async def add_report(self, user: str, report: Report) -> Report | None:
        args = [report.key, encode_report(report), REPORTS_PER_USER, int(self.retention.total_seconds())]
        added = await self._call(
            "report", self._report(keys=[reports_key(user)], args=args), budget=max(self.timeout, CHANGE_BUDGET)
        )
        return report if added else None

    async def reports(self, user: str) -> Sequence[Report]:
        raw = await self._call("reports", self.client.hvals(reports_key(user)), budget=1.0)
        oldest = time.time() - self.retention.total_seconds()
        found = [decode_report(value) for value in raw]
        return sorted((r for r in found if r.created_at >= oldest), key=_newest_first)

    async def _flush_records(self) -> None:
        while not self._closed:
            await asyncio.sleep(FLUSH_EVERY)
            await self.flush()
            await self._review.flush()

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
            # In a context of their own: they outlive the request that starts them, and its trace.
            task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
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
                self._review.changed()  # a decision made while we were not listening is read now
                delay = 0.05
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        said = message["data"].decode()
                        if said == REVIEW_MESSAGE:
                            self._review.changed()
                        else:
                            self.cache.invalidate(said)
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
            await self._review.flush()
        await self._review.aclose()
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

    def _count_dropped(self, count: int) -> None:
        if self.metrics is not None:
            self.metrics.decision_records_dropped.inc(count)
