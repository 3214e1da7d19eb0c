"""Choosing the language of the texts: the user's control, else Accept-Language, else the default."""

from __future__ import annotations

from collections.abc import Sequence

from guardrail.caching import BoundedCache

# Distinct Accept-Language values whose choice is kept: the header is the client's to write.
ACCEPT_LANGUAGES = 1024


class LocaleNegotiator:
    def __init__(self, enabled: Sequence[str], default: str) -> None:
        self.enabled = tuple(enabled)
        self.default = default
        self._cache: BoundedCache[bytes, str] = BoundedCache(ACCEPT_LANGUAGES)

    def choose(self, user_locale: str | None, accept_language: bytes | None) -> str:
        if user_locale is not None and user_locale in self.enabled:
            return user_locale
        if not accept_language:
            return self.default
        found = self._cache.get(accept_language)
        if found is None:
            found = self._cache.put(accept_language, self._negotiate(accept_language.decode("latin-1")))
        return found

    def _negotiate(self, header: str) -> str:
        ranked: list[tuple[float, int, str]] = []
        for position, part in enumerate(header.split(",")[:32]):
            tag, _, params = part.strip().partition(";")
            quality = 1.0
            params = params.strip()
            if params.startswith("q="):
                try:
                    quality = float(params[2:])
                except ValueError:
                    quality = 0.0
            if quality > 0:
                ranked.append((-quality, position, tag.strip().lower()))
        for _, _, tag in sorted(ranked):
            primary = tag.split("-")[0]
            for candidate in (tag, primary):
                if candidate in self.enabled:
                    return candidate
        return self.default
