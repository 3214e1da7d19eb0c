"""An issuer's signing keys, fetched from its JWKS URL and refetched as it rotates them (`identity.jwt.jwks_url`).

PyJWT's `PyJWKClient` fetches and parses the key set (http(s) only, no redirects, a timeout per read);
what it fetches is kept here, so that a request never waits on the network for a key that is held.
Its own lookup (`get_signing_key`) fetches on the calling thread, which on the event loop would stall
every request, so it is not used: a fetch runs in a worker thread, one at a time, and
- a token whose `kid` is not held waits for one fetch, at most `FETCH_SECONDS`; requests with
  held keys never wait;
- a fetch starts at most once per `COOLDOWN_SECONDS`, whatever the tokens say: a flood of tokens
  with made-up `kid`s costs the issuer one request per cooldown, and those tokens are anonymous
  at once while it lasts (they share the fetch in flight, if any);
- keys older than `MAX_AGE_SECONDS` are refetched in the background while they still verify, so
  that a key the issuer withdrew stops verifying within that time.
When the key set cannot be fetched, the keys held keep verifying; with none held every token is
anonymous, the log says why (once per kind of failure) and `/readyz` reports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from guardrail.optional import load

logger = logging.getLogger("guardrail")

COOLDOWN_SECONDS = 30.0
MAX_AGE_SECONDS = 600.0
FETCH_SECONDS = 5.0
# A key id longer than this is none an issuer gives; it is not looked up.
MAX_KID_LENGTH = 256


class KeySet:
    def __init__(
        self,
        url: str,
        *,
        cooldown: float = COOLDOWN_SECONDS,
        max_age: float = MAX_AGE_SECONDS,
        fetch_seconds: float = FETCH_SECONDS,
    ) -> None:
        jwt = load("jwt", extra="jwt", feature="identity.jwt.jwks_url")
        load("cryptography", extra="jwt", feature="identity.jwt.jwks_url")
        self.url = url
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=fetch_seconds)
        self.cooldown = cooldown
        self.max_age = max_age
        self.fetch_seconds = fetch_seconds
        self.keys: dict[str, Any] = {}  # kid -> PyJWK
        self.fetches = 0  # started, for the log and tests
        self.problem: str | None = None  # why the last fetch failed, while it is the last
        self._fetched_at: float | None = None  # monotonic, last success
        self._tried_at: float | None = None  # monotonic, last start
        self._fetch: asyncio.Future[bool] | None = None
        self._logged: set[str] = set()

    def get(self, kid: str) -> Any:
        """The key with this id, if held (no I/O); a background refetch starts when the keys are old."""
        key = self.keys.get(kid)
        if key is not None and self._fetched_at is not None and time.monotonic() - self._fetched_at > self.max_age:
            self._start()
        return key

    async def fetch_for(self, kid: str) -> Any:
        """The key with this id after at most one fetch (shared with other callers, bounded in time),
        or None: not in the key set, unreachable, or fetched too recently to fetch again."""
        if len(kid) <= MAX_KID_LENGTH:
            await self.refresh()
        return self.keys.get(kid)

    async def refresh(self) -> bool:
        """Wait for the fetch in flight, or start one if the cooldown allows; True when keys are held."""
        fetch = self._fetch if self._fetch is not None else self._start()
        if fetch is not None:
            try:
                await asyncio.wait_for(asyncio.shield(fetch), self.fetch_seconds)
            except TimeoutError:
                self._log_once(
                    "slow", "fetching the JWT keys from %s takes longer than %s s", self.url, self.fetch_seconds
                )
        return bool(self.keys)

    async def readiness(self) -> str | None:
        """For `/readyz`: None while keys are held (fetching them if none are yet), else why not."""
        if await self.refresh():
            return None
        return f"no JWT keys from the key set at {self.url}: {self.problem or 'not fetched yet'}"

    def _start(self) -> asyncio.Future[bool] | None:
        if self._fetch is not None:
            return self._fetch
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop (a synchronous check): nothing to fetch on
            return None
        now = time.monotonic()
        if self._tried_at is not None and now - self._tried_at < self.cooldown:
            return None
        self._tried_at = now
        self.fetches += 1
        self._fetch = fetch = asyncio.ensure_future(self._fetch_in_thread())
        return fetch

    async def _fetch_in_thread(self) -> bool:
        try:
            keys = await asyncio.to_thread(self._read)
        except Exception as exc:  # whatever the network or the key set did wrong: keep what is held
            self.problem = _short(exc)
            then = "the keys held still verify" if self.keys else "tokens are anonymous until it answers"
            self._log_once(type(exc).__name__, "cannot fetch JWT keys from %s (%s); %s", self.url, self.problem, then)
            return False
        finally:
            self._fetch = None
        self.keys = keys
        self.problem = None
        self._fetched_at = time.monotonic()
        self._logged.clear()  # a failure after this recovery is news again
        return True

    def _read(self) -> dict[str, Any]:
        """The signing keys by id (blocking: run in a thread)."""
        return {key.key_id: key for key in self._client.get_signing_keys(refresh=True)}

    def _log_once(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning(message, *args)


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."
