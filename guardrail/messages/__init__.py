"""The one message catalog: every sentence a user reads, one JSON file per locale beside this module.

Explanations, notices and receipts (guardrail/explain/render.py) and the controls page (keys starting
`page.`, guardrail/web/page.py) read it, so a locale is complete for both or refused for both.

A message is a string with `{placeholders}`, or, where the count changes the words, a mapping of
CLDR plural categories (`one`, `other`) to strings. Every locale must define every key that `en`
defines; `missing_messages()` says which are not, and the policy check refuses a locale that has none.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

Message = str | Mapping[str, str]


def _load_catalogs() -> dict[str, dict[str, Message]]:
    catalogs: dict[str, dict[str, Message]] = {}
    for entry in resources.files("guardrail.messages").iterdir():
        if entry.name.endswith(".json"):
            catalogs[entry.name.removesuffix(".json")] = json.loads(entry.read_text(encoding="utf-8"))
    return catalogs


CATALOGS: dict[str, dict[str, Message]] = _load_catalogs()
AVAILABLE_LOCALES: frozenset[str] = frozenset(CATALOGS)
SOURCE_LOCALE = "en"


def missing_messages(locales: Iterable[str]) -> dict[str, list[str]]:
    """Keys of the source locale that a locale lacks (or defines with other placeholders)."""
    source = CATALOGS[SOURCE_LOCALE]
    missing: dict[str, list[str]] = {}
    for locale in locales:
        catalog = CATALOGS.get(locale, {})
        gaps = [
            key
            for key, message in source.items()
            if key not in catalog or _placeholders(catalog[key]) != _placeholders(message)
        ]
        if gaps:
            missing[locale] = gaps
    return missing


def _placeholders(message: Message) -> frozenset[str]:
    texts = [message] if isinstance(message, str) else list(message.values())
    return frozenset(name for text in texts for _, name, _, _ in string.Formatter().parse(text) if name)


def message(locale: str, key: str, **params: Any) -> str:
    """Render one message; `n` (if given) picks the plural form."""
    entry = CATALOGS[locale][key]
    if not isinstance(entry, str):
        count = params.get("n")
        entry = entry["one"] if count == 1 and "one" in entry else entry["other"]
    return entry.format(**params) if params else entry
