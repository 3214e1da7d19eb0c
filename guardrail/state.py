"""What the store keeps for a user (docs/architecture.md §6): their controls, a validated change to them,
and their reports.

`UserState` is immutable: a change makes a new one, so a state handed to a request never
changes under it, and caches can compare states by identity. A `ControlsPatch` is made only by
`guardrail.controls.validate_patch`, so a store only ever applies a change known to be good.
This module imports nothing of the policy: the engine and the stores read states without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class UserState:
    """What the store keeps for one user. `muted` maps a category to when the snooze ends (None: muted).
    `paused_until`: personal suggestions are paused (as if personalization were off) until then."""

    personalization: bool = True
    consent: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    signals: Mapping[str, bool] = field(default_factory=lambda: _EMPTY)
    muted: Mapping[str, datetime | None] = field(default_factory=lambda: _EMPTY)
    sensitive: Mapping[str, bool] = field(default_factory=lambda: _EMPTY)
    locale: str | None = None
    paused_until: datetime | None = None
    revision: int = 0
    updated_at: datetime | None = None

    def active_mutes(self, now: datetime) -> dict[str, datetime | None]:
        return {topic: until for topic, until in self.muted.items() if until is None or until > now}

    def pause_end(self, now: datetime) -> datetime | None:
        """When the pause in force at `now` ends; None when there is none (a pause that has ended is none)."""
        until = self.paused_until
        return until if until is not None and until > now else None

    def to_json(self, user: str, now: datetime) -> dict[str, Any]:
        return {
            "user": user,
            "personalization": self.personalization,
            "consent": dict(self.consent),
            "signals": dict(self.signals),
            "muted": {topic: {"until": format_time(until)} for topic, until in sorted(self.active_mutes(now).items())},
            "sensitive": dict(self.sensitive),
            "locale": self.locale,
            "paused_until": format_time(self.pause_end(now)),
            "revision": self.revision,
            "updated_at": format_time(self.updated_at),
        }


# A known user who never changed anything: purpose defaults apply. One shared object, so the
# context cache (which compares states by identity) hits for every such user.
DEFAULT_STATE = UserState()

UNSET = object()  # a field the patch does not mention


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


# A key set to null in a merge patch is removed (RFC 7386). Inside a validated patch that is
# REMOVE, not None: None is a real value there (a mute with no end).
REMOVE = _Remove()


@dataclass(frozen=True, slots=True)
class ControlsPatch:
    personalization: bool | object | None = UNSET
    locale: str | object | None = UNSET
    paused_until: datetime | object | None = UNSET  # None: resume now
    maps: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)

    def changed_fields(self) -> list[str]:
        fields = [name for name in ("personalization", "locale", "paused_until") if getattr(self, name) is not UNSET]
        return fields + list(self.maps)

    def apply(self, state: UserState, now: datetime) -> UserState:
        """The state after this patch: every map merges key by key, expired snoozes are dropped."""
        values: dict[str, Any] = {}
        if self.personalization is not UNSET:
            values["personalization"] = True if self.personalization is None else self.personalization
        if self.locale is not UNSET:
            values["locale"] = self.locale
        if self.paused_until is not UNSET:
            values["paused_until"] = self.paused_until
        elif state.paused_until is not None and state.paused_until <= now:
            values["paused_until"] = None  # a pause that has ended is dropped, like an ended snooze
        for name, changes in self.maps.items():
            current = dict(getattr(state, name))
            if changes is None:
                current = {}
            else:
                for key, value in changes.items():
                    if value is REMOVE:
                        current.pop(key, None)
                    else:
                        current[key] = value
            if name == "muted":
                current = {t: u for t, u in current.items() if u is None or u > now}
            values[name] = MappingProxyType(current)
        return _replace(state, values, revision=state.revision + 1, updated_at=now)


def _replace(state: UserState, values: Mapping[str, Any], **extra: Any) -> UserState:
    fields = {name: getattr(state, name) for name in UserState.__slots__}
    fields.update(values, **extra)
    return UserState(**fields)


def format_time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TimeOutOfRange(ValueError):
    """A time with a zone that has no UTC equivalent: year 1 east of UTC, year 9999 west of it."""


def parse_time(value: str) -> datetime:
    """An ISO 8601 time with a zone, in UTC; `ValueError` if it is none, `TimeOutOfRange` if UTC has none."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if moment.tzinfo is None:
        raise ValueError("naive time")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise TimeOutOfRange(value) from None


# Why a user reports an item (docs/api.md#reports), in the order the forms offer them.
REPORT_REASONS = ("not_for_me", "offensive", "wrong_topic", "other")
# The most reports a store keeps per user; past it the oldest goes.
REPORTS_PER_USER = 200


@dataclass(frozen=True, slots=True)
class Report:
    """A user's report of one item of one of their decisions: kept for them (the export shows it) as long
    as decision records are, and counted, without them, for the reviewers (docs/review.md)."""

    decision: str
    item: str  # the item's id as text
    reason: str  # one of REPORT_REASONS
    created_at: float  # seconds since the epoch
    route: str
    title: str | None = None
    note: str | None = None

    @property
    def key(self) -> str:
        """What makes it one report: a user reports an item of a decision once."""
        return f"{self.decision}\n{self.item}"

    def to_json(self) -> dict[str, Any]:
        """As the API and the export show it."""
        return {
            "decision": self.decision,
            "item": self.item,
            "title": self.title,
            "route": self.route,
            "reason": self.reason,
            "note": self.note,
            "created_at": format_time(datetime.fromtimestamp(self.created_at, UTC)),
        }
