"""After a guarded response has gone out: some of them, sampled, handed to work off the response path.

A live candidate policy (`guardrail.candidate`) and the recording of cases for `guardrail diff`
(`guardrail.recording`) both take the facts a response was decided on. The responder offers them once
it has sent the page; each taker draws at its own rate, and a request drawn by none costs one random
number per taker. What is drawn goes into a bounded queue: when it is full the request's facts are
dropped and counted (`guardrail_candidate_dropped_total`), never waited for. The queue is drained on
the event loop, one request per turn, so a request that is ready to run waits for at most one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from typing import TYPE_CHECKING, NamedTuple, Protocol

from guardrail.engine import ItemDecision
from guardrail.state import UserState

if TYPE_CHECKING:
    from prometheus_client import Counter

logger = logging.getLogger("guardrail")

# Requests waiting for the takers. Each holds its upstream body (immutable bytes): at a typical 10 kB page
# the full queue holds a few megabytes. A worker that keeps up never has more than a few waiting.
QUEUE_LIMIT = 256


class Asked(NamedTuple):
    """What a request said and what the store gave, as the live policy used them: enough for another
    policy to decide the same request again. Part of `guardrail.middleware.Resolved`."""

    state: UserState | None  # None: anonymous
    gpc: bool
    age: int | None
    tc_string: str | None
    accept_language: bytes | None
    degraded: bool  # the store did not answer: `state` is the last one seen, or the default


class Sampled(NamedTuple):
    """One guarded response, as it was decided. Nothing in it changes after it is made: `body` is the
    upstream's JSON as it came (decoded, before the guardrail rewrote the page) and `live` the list of
    the live policy's decisions, which nothing appends to once the page is checked."""

    route: str  # the live route's template
    body: bytes
    live: list[ItemDecision]
    user: str | None
    asked: Asked
    at: float  # when it was decided (time.time())
    takers: tuple[Taker, ...]


class Taker(Protocol):
    """What works on sampled responses: it draws `rate` of them (0 to 1)."""

    @property
    def rate(self) -> float: ...

    def take(self, sampled: Sampled) -> None:
        """Work on one response (on the event loop, between requests: it must not wait on anything)."""

    def flush(self) -> None:
        """The queue is empty for now: write out what is buffered."""

    def close(self) -> None: ...


class Sampler:
    """Draws, queues and drains sampled responses for its takers."""

    def __init__(self, takers: list[Taker], dropped: Counter, *, limit: int = QUEUE_LIMIT) -> None:
        self.takers = takers
        self.dropped = dropped
        self.limit = limit
        self.queue: collections.deque[Sampled] = collections.deque()
        self._draw = random.Random().random  # noqa: S311 (a sample, not a secret)
        # The loop a drain is scheduled on: a loop that ended (a test client's) leaves its drain unrun,
        # and the next offer on another loop schedules a new one.
        self._draining_on: asyncio.AbstractEventLoop | None = None

    def offer(self, route: str, body: bytes, live: list[ItemDecision], user: str | None, asked: Asked) -> None:
        """A guarded response has gone out: queue it for the takers that draw it, if any."""
        draw = self._draw
        chosen: tuple[Taker, ...] = ()
        for taker in self.takers:
            if draw() < taker.rate:
                chosen = (*chosen, taker)
        if not chosen:
            return
        queue = self.queue
        if len(queue) >= self.limit:
            self.dropped.inc()
            return
        queue.append(Sampled(route, body, live, user, asked, time.time(), chosen))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): done now
            self.drain()
            return
        if self._draining_on is not loop:
            self._draining_on = loop
            loop.call_soon(self._drain_one)

    def _drain_one(self) -> None:
        queue = self.queue
        if queue:
            self._work(queue.popleft())
        if queue:
            asyncio.get_running_loop().call_soon(self._drain_one)
        else:
            self._draining_on = None
            self._flush()

    def drain(self) -> None:
        """Work on everything queued, now (at shutdown, or without an event loop)."""
        queue = self.queue
        while queue:
            self._work(queue.popleft())
        self._flush()

    def close(self) -> None:
        """What is queued is worked on and written, and the takers closed."""
        self.drain()
        for taker in self.takers:
            taker.close()

    def _work(self, sampled: Sampled) -> None:
        for taker in sampled.takers:
            try:
                taker.take(sampled)
            except Exception:  # a taker's fault must not stop the others, nor the drain
                logger.exception("a sampled response could not be worked on (%s)", type(taker).__name__)

    def _flush(self) -> None:
        for taker in self.takers:
            try:
                taker.flush()
            except Exception:
                logger.exception("sampled work could not be written (%s)", type(taker).__name__)
