"""The review queue in Redis (docs/review.md): shared by every replica and kept across restarts.

Sightings wait in a bounded local queue and are written in pipelined batches by the store's
background flush, as decision records are. Decisions are written at once by one script, which
publishes on the invalidation channel; every replica then reads the overlay again (and when it
(re)subscribes, since it may have missed a message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from guardrail.errors import StoreError
from guardrail.metrics import Metrics
from guardrail.review import MAX_EXAMPLES, MAX_ROUTES, Overlay, QueueEntry, ReviewDecision, Sighting
from guardrail.store.redis_calls import BudgetedCalls
from guardrail.store.redis_keys import CHANNEL, REVIEW_KEYS, REVIEW_MESSAGE
from guardrail.store.review_base import OverlayListener, report_sighting, still_wanted
from guardrail.store.review_memory import DEFAULT_MAX_ENTRIES

logger = logging.getLogger("guardrail.store")

MAX_QUEUED_SIGHTINGS = 10_000
BATCH = 500
STATS_EVERY = 5.0  # seconds between reads of the queue's size for the gauges
_LUA = resources.files("guardrail.store").joinpath("lua")
_NOTE_KEYS = [REVIEW_KEYS[name] for name in ("q", "rank", "age", "overlay", "n")]
_DECIDE_KEYS = [REVIEW_KEYS[name] for name in ("q", "rank", "age", "overlay", "audit", "n")]


class RedisReviewQueue:
    def __init__(
        self, calls: BudgetedCalls, metrics: Metrics | None = None, *, start: Callable[[], None] = lambda: None
    ) -> None:
        # Starts the store's background work (the flush, the invalidation channel) if not running yet.
        self._start = start
        self.max_entries = DEFAULT_MAX_ENTRIES
        self.calls = calls
        client = calls.client
        self._note = client.register_script(_LUA.joinpath("review_note.lua").read_text())
        self._decide = client.register_script(_LUA.joinpath("review_decide.lua").read_text())
        self._queue: deque[Sighting] = deque()
        self._overlay = Overlay()
        self._listeners: list[OverlayListener] = []
        self._refreshing: asyncio.Task[None] | None = None
        self._again = False
        self._counts: dict[str, int] = {}
        self._oldest: float | None = None
        self._stats_at = 0.0
        self.dropped_sightings = 0  # not written: the local queue was full or the store failed
        if metrics is not None:
            metrics.watch_review_queue(lambda: self._counts, lambda: self._oldest)

    # -- sightings -----------------------------------------------------------------------------

    def note(self, seen: Sighting) -> None:
        if not still_wanted(seen, self._overlay.decisions.get(seen.entry)):
            return
        if len(self._queue) >= MAX_QUEUED_SIGHTINGS:
            self.dropped_sightings += 1
            return
        self._queue.append(seen)
        self._start()

    def note_report(self, route: str | None, item_id: str, reason: str, title: str | None = None) -> None:
        self.note(report_sighting(route, item_id, reason, title, time.time()))

    async def flush(self) -> None:
        """Write the queued sightings in one pipelined round trip; and now and then read the queue's size."""
        if self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH))]
            try:
                results = await self.calls._call("review", self._write(batch), budget=1.0)
                if any(isinstance(result, NoScriptError) for result in results):
                    await self.calls._call("review", self.calls.client.script_load(self._note.script), budget=1.0)
                    results = await self.calls._call("review", self._write(batch), budget=1.0)
                self.dropped_sightings += sum(isinstance(result, Exception) for result in results)
            except StoreError:
                self.dropped_sightings += len(batch)  # best effort, as decision records: never a growing backlog
        if time.monotonic() - self._stats_at >= STATS_EVERY:
            self._stats_at = time.monotonic()
            # On failure the gauges keep their last values; the store's errors are counted.
            with contextlib.suppress(StoreError):
                await self._read_stats()

    async def _write(self, batch: list[Sighting]) -> list[Any]:
        pipe = self.calls.client.pipeline(transaction=False)
        for seen in batch:
            pipe.evalsha(
                self._note.sha,
                len(_NOTE_KEYS),
                *_NOTE_KEYS,
                seen.entry,
                seen.kind,
                seen.subject,
                seen.route or "",
                seen.item or "",
                seen.reason or "",
                seen.title or "",
                repr(seen.at),
                self.max_entries,
                MAX_EXAMPLES,
                MAX_ROUTES,
            )
        return list(await pipe.execute(raise_on_error=False))

    async def _read_stats(self) -> None:
        pipe = self.calls.client.pipeline(transaction=False)
        pipe.hgetall(REVIEW_KEYS["n"])
        pipe.zrange(REVIEW_KEYS["age"], 0, 0, withscores=True)
        counts, oldest = await self.calls._call("review", pipe.execute(), budget=1.0)
        self._counts = {k.decode(): int(v) for k, v in counts.items() if k != b"dropped"}
        self._oldest = float(oldest[0][1]) if oldest else None

    # -- reading the queue ---------------------------------------------------------------------

    async def entries(self) -> Sequence[QueueEntry]:
        await self.flush()
        raw = await self.calls._call("review", self.calls.client.hvals(REVIEW_KEYS["q"]), budget=1.0)
        return sorted((QueueEntry.from_store(orjson.loads(value)) for value in raw), key=lambda e: e.first_seen)

    async def entry(self, entry_id: str) -> QueueEntry | None:
        raw = await self.calls._call("review", self.calls.client.hget(REVIEW_KEYS["q"], entry_id), budget=1.0)
        return QueueEntry.from_store(orjson.loads(raw)) if raw is not None else None

    async def dropped(self) -> int:
        raw = await self.calls._call("review", self.calls.client.hget(REVIEW_KEYS["n"], "dropped"), budget=1.0)
        return int(raw or 0)

    async def audit(self) -> Sequence[ReviewDecision]:
        raw = await self.calls._call("review", self.calls.client.lrange(REVIEW_KEYS["audit"], 0, -1), budget=2.0)
        return [ReviewDecision.from_store(orjson.loads(value)) for value in raw]

    # -- decisions -----------------------------------------------------------------------------

    async def decide(self, decision: ReviewDecision) -> None:
        args = [decision.entry, orjson.dumps(decision.to_store()), CHANNEL, REVIEW_MESSAGE]
        await self.calls._call("review", self._decide(keys=_DECIDE_KEYS, args=args), budget=1.0)
        # This replica need not wait for its own message to come back.
        self._use(Overlay([*self._overlay.decisions.values(), decision]))

    @property
    def overlay(self) -> Overlay:
        return self._overlay

    async def refresh(self) -> Overlay:
        self._start()
        raw = await self.calls._call("review", self.calls.client.hvals(REVIEW_KEYS["overlay"]), budget=1.0)
        overlay = Overlay(ReviewDecision.from_store(orjson.loads(value)) for value in raw)
        if overlay.decisions != self._overlay.decisions:
            self._use(overlay)
        return overlay

    def on_change(self, listener: OverlayListener) -> None:
        self._listeners.append(listener)

    def changed(self) -> None:
        """Another replica (or a resubscription) says the overlay may have changed: read it again, one
        read at a time, and once more if told again meanwhile."""
        if self._refreshing is not None and not self._refreshing.done():
            self._again = True
            return
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh_until_quiet())

    async def _refresh_until_quiet(self) -> None:
        delay = 0.05
        while True:
            self._again = False
            try:
                await self.refresh()
            except StoreError as exc:
                logger.warning("could not read the review decisions (%s); trying again", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._again = True
            if not self._again:
                return

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(BaseException):
                await self._refreshing

    def _use(self, overlay: Overlay) -> None:
        self._overlay = overlay
        for listener in list(self._listeners):
            try:
                listener(overlay)
            except Exception:
                logger.exception("a listener failed to apply the review decisions")
