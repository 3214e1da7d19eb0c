"""Everything about a policy that the hot path would otherwise recompute per item.

The engine reads a loaded policy's attributes; it never loads, validates or imports the policy's
models (`Policy` is named here for type checkers only), so importing the engine stays cheap and free
of pydantic, as docs/architecture.md's import tree says.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from guardrail.caching import BoundedCache

if TYPE_CHECKING:
    from guardrail.policy.models import Policy

# Category facts are kept for this many distinct spellings: upstreams may send categories the policy never names.
CATEGORY_FACTS = 100_000


def is_sensitive_category(policy: Policy, category: str) -> bool:
    """What the closest category that says so says: `health.pregnancy` is sensitive because
    `health` is, unless it is itself marked `sensitive: false`."""
    parts = category.split(".")
    for depth in range(len(parts), 0, -1):
        entry = policy.categories.get(".".join(parts[:depth]))
        if entry is not None and entry.sensitive is not None:
            return bool(entry.sensitive)
    return False


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
        # An alias is another spelling of a defined category: mutes, opt-ins and sensitivity follow it.
        aliases = dict(policy.category_aliases)
        spelling = category_spelling if not aliases else _aliased(aliases)
        self.category_id = BoundedCache.memoize(CATEGORY_FACTS, spelling)
        # Item ids (as strings) hidden for everyone by a reviewer's decision (guardrail.engine.blocks).
        self.blocked = frozenset(policy.blocked_items)
        self.prefixes = BoundedCache.memoize(CATEGORY_FACTS, _prefixes)
        self.is_sensitive = BoundedCache.memoize(CATEGORY_FACTS, self._is_sensitive)
        self.is_unknown = BoundedCache.memoize(CATEGORY_FACTS, self._is_unknown)

    def _is_sensitive(self, category: str) -> bool:
        return is_sensitive_category(self.policy, category)

    def _is_unknown(self, category: str) -> bool:
        """Whether neither the category (a `category_id`) nor any category above it is in the policy."""
        defined = self.policy.categories
        return not any(prefix in defined for prefix in self.prefixes(category))

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


def category_spelling(sent: str) -> str:
    """The policy's spelling of a category id the upstream sent: NFKC, trimmed, lowercase (docs/architecture.md §2),
    so that ` Gambling` and a full-width `gambling` (U+FF47...) are `gambling`."""
    return unicodedata.normalize("NFKC", sent).strip().lower()


def _aliased(aliases: dict[str, str]) -> Callable[[str], str]:
    def spelling(sent: str) -> str:
        found = category_spelling(sent)
        return aliases.get(found, found)

    return spelling


def _prefixes(category: str) -> tuple[str, ...]:
    """`health.pregnancy` → (`health`, `health.pregnancy`): a rule on any of them applies."""
    parts = category.split(".")
    return tuple(".".join(parts[: depth + 1]) for depth in range(len(parts)))
