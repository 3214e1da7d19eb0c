"""The controls page's CSRF tokens: an HMAC (key `GUARDRAIL_CSRF_KEY`, else random per process, or per
`guardrail serve` for all its workers) over the caller's id and an hour-long window; a POST must carry the token
of the current or the previous window."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

CSRF_WINDOW_SECONDS = 3600
_PROCESS_KEY = secrets.token_bytes(32)


def csrf_key() -> bytes:
    from guardrail.settings import Settings

    configured = Settings.load().csrf_key
    return configured.get_secret_value().encode() if configured is not None else _PROCESS_KEY


class CsrfTokens:
    def __init__(self, key: bytes, window: int = CSRF_WINDOW_SECONDS) -> None:
        self.key = key
        self.window = window

    def _sign(self, user: str, window: int) -> str:
        return hmac.new(self.key, f"{window}\n{user}".encode(), hashlib.sha256).hexdigest()

    def issue(self, user: str, now: float | None = None) -> str:
        return self._sign(user, int((time.time() if now is None else now) // self.window))

    def verify(self, user: str, token: str | None, now: float | None = None) -> bool:
        if not token:
            return False
        current = int((time.time() if now is None else now) // self.window)
        given = token.encode("utf-8", "replace")
        # Both windows are always compared, so the time taken says nothing about which one matched.
        matches = [hmac.compare_digest(self._sign(user, w).encode(), given) for w in (current, current - 1)]
        return any(matches)
