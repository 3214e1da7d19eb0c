"""Everything about a policy that the hot path would otherwise recompute per item."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from guardrail.controls import is_sensitive_category as category_is_sensitive
from guardrail.policy.models import Policy


@dataclass(frozen=True, slots=True)
class SignalInfo:
    purpose: str
    sensitivity: int
    sale_or_share: bool
    third_party: bool


class CompiledPolicy:
    """A policy with its lookups precomputed. Built once per loaded policy, shared by all requests."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.signals = {
            name: SignalInfo(s.purpose, s.sensitivity, s.sale_or_share, s.third_party)
            for name, s in policy.signals.items()
        }
        self.weights = policy.invasiveness.weights
        self.fresh_seconds = policy.invasiveness.fresh_activity_seconds
        self.discreet_at = policy.invasiveness.discreet_at
        self.hide_at = policy.invasiveness.hide_at
        self.controls_url = f"{policy.prefix}/controls" if policy.prefix is not None else None
        self.unknown_categories = policy.unknown_categories
        # Category facts are memoized lazily (and bounded): upstreams may send categories the policy never names.
        self._ids: dict[str, str] = {}
        self._prefixes: dict[str, tuple[str, ...]] = {}
        self._sensitive: dict[str, bool] = {}
        self._unknown: dict[str, bool] = {}

    def category_id(self, sent: str) -> str:
        """The policy's spelling of a category id the upstream sent: NFKC, trimmed, lowercase (docs/architecture.md §2),
        so that ` Gambling` and a full-width `gambling` (U+FF47...) are `gambling`."""
        found = self._ids.get(sent)
        if found is None:
            found = unicodedata.normalize("NFKC", sent).strip().lower()
            if len(self._ids) < 100_000:
                self._ids[sent] = found
        return found

    def is_unknown(self, category: str) -> bool:
        """Whether neither the category (a `category_id`) nor any category above it is in the policy."""
        found = self._unknown.get(category)
        if found is None:
            defined = self.policy.categories
            found = not any(prefix in defined for prefix in self.prefixes(category))
            if len(self._unknown) < 100_000:
                self._unknown[category] = found
        return found

    def prefixes(self, category: str) -> tuple[str, ...]:
        """`health.pregnancy` → (`health`, `health.pregnancy`): a rule on any of them applies."""
        found = self._prefixes.get(category)
        if found is None:
            parts = category.split(".")
            found = tuple(".".join(parts[: depth + 1]) for depth in range(len(parts)))
            if len(self._prefixes) < 100_000:  # bounded: category names come from the upstream
                self._prefixes[category] = found
        return found

    def is_sensitive(self, category: str) -> bool:
        found = self._sensitive.get(category)
        if found is None:
            found = category_is_sensitive(self.policy, category)
            if len(self._sensitive) < 100_000:
                self._sensitive[category] = found
        return found

    def label(self, kind: str, name: str, locale: str) -> str:
        """The plain label of a signal, category or purpose in a locale; its id, readably, if it has none."""
        policy = self.policy
        entry: Any = (
            policy.signals.get(name)
            if kind == "signal"
            else policy.categories.get(name)
            if kind == "category"
            else policy.purposes.get(name)
        )
        labels = getattr(entry, "label", None)
        if not labels:
            return name.replace("_", " ").replace(".", ": ")
        return str(labels.get(locale) or labels.get(self.policy.default_locale) or name)

    @cached_property
    def sensitive_categories(self) -> tuple[str, ...]:
        return tuple(name for name in self.policy.categories if self.is_sensitive(name))
