"""A user's controls (docs/architecture.md §6) and how a JSON merge patch (RFC 7386) changes them.

`UserState` is immutable: a change makes a new one, so a state handed to a request never
changes under it, and caches can compare states by identity.
Patches are validated against the policy *before* any store sees them: a store only ever
applies a `ControlsPatch` that is known to be good, so nothing is half-applied.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from guardrail.echo import echo
from guardrail.errors import InvalidControls
from guardrail.policy.models import Policy

MAX_MUTED_TOPICS = 200
# A refused change lists this many problems at most: the answer to a change naming thousands of
# unknown keys stays small.
MAX_PROBLEMS_LISTED = 10
CONSENT_VALUES = ("granted", "denied")
_EMPTY: Mapping[str, Any] = MappingProxyType({})
MAPS = ("consent", "signals", "muted", "sensitive")
_KINDS = {"consent": "purpose", "signals": "signal", "muted": "category", "sensitive": "sensitive category"}
_PLURALS = {"consent": "purposes", "signals": "signals", "muted": "categories", "sensitive": "sensitive categories"}


@dataclass(frozen=True, slots=True)
class UserState:
    """What the store keeps for one user. `muted` maps a category to when the snooze ends (None: muted)."""

    personalization: bool = True
    consent: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    signals: Mapping[str, bool] = field(default_factory=lambda: _EMPTY)
    muted: Mapping[str, datetime | None] = field(default_factory=lambda: _EMPTY)
    sensitive: Mapping[str, bool] = field(default_factory=lambda: _EMPTY)
    locale: str | None = None
    revision: int = 0
    updated_at: datetime | None = None

    def active_mutes(self, now: datetime) -> dict[str, datetime | None]:
        return {topic: until for topic, until in self.muted.items() if until is None or until > now}

    def to_json(self, user: str, now: datetime) -> dict[str, Any]:
        return {
            "user": user,
            "personalization": self.personalization,
            "consent": dict(self.consent),
            "signals": dict(self.signals),
            "muted": {topic: {"until": format_time(until)} for topic, until in sorted(self.active_mutes(now).items())},
            "sensitive": dict(self.sensitive),
            "locale": self.locale,
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
    maps: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)

    def changed_fields(self) -> list[str]:
        fields = [name for name in ("personalization", "locale") if getattr(self, name) is not UNSET]
        return fields + list(self.maps)

    def apply(self, state: UserState, now: datetime) -> UserState:
        """The state after this patch: every map merges key by key, expired snoozes are dropped."""
        values: dict[str, Any] = {}
        if self.personalization is not UNSET:
            values["personalization"] = True if self.personalization is None else self.personalization
        if self.locale is not UNSET:
            values["locale"] = self.locale
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


def validate_patch(policy: Policy, body: Any, now: datetime) -> ControlsPatch:
    """Check a merge patch against the policy; raise `InvalidControls` naming every bad field."""
    problems: list[tuple[str, str]] = []
    if not isinstance(body, Mapping):
        raise InvalidControls([("(body)", 'send a JSON object, e.g. {"signals": {"location_precise": false}}')])

    personalization: Any = UNSET
    locale: Any = UNSET
    maps: dict[str, Mapping[str, Any] | None] = {}
    read_only = ("user", "revision", "updated_at")
    allowed = ("personalization", "locale", *MAPS)
    for key, value in body.items():
        if key in read_only:
            problems.append((key, "is read-only; leave it out of the patch"))
        elif key == "personalization":
            if value is not None and not isinstance(value, bool):
                problems.append((key, "must be true, false or null"))
            personalization = value
        elif key == "locale":
            if value is not None and value not in policy.locales:
                problems.append((key, f"must be one of {', '.join(policy.locales)} or null"))
            locale = value
        elif key in MAPS:
            if value is None:
                maps[key] = None
            elif not isinstance(value, Mapping):
                problems.append((key, "must be an object (or null to clear it)"))
            else:
                valid = _valid_names(policy, key)
                if len(value) > len(valid):
                    # Each key must name one of them, so more keys than that cannot all be valid.
                    problems.append(
                        (
                            key,
                            f"names {len(value)} entries, but this policy has {len(valid)} {_PLURALS[key]}: "
                            f"name at most {len(valid)}",
                        )
                    )
                maps[key] = _validate_map(key, value, valid, now, problems)
        else:
            problems.append((echo(key), f"unknown field; valid fields: {', '.join(allowed)}"))
    muted = maps.get("muted")
    if muted and len(muted) > MAX_MUTED_TOPICS:
        problems.append(("muted", f"at most {MAX_MUTED_TOPICS} topics can be muted in one change"))
    if problems:
        if len(problems) > MAX_PROBLEMS_LISTED:
            more = len(problems) - MAX_PROBLEMS_LISTED
            problems[MAX_PROBLEMS_LISTED:] = [("(more)", f"{more} more problems like these are not listed")]
        raise InvalidControls(problems)
    return ControlsPatch(personalization=personalization, locale=locale, maps=maps)


def _valid_names(policy: Policy, name: str) -> Mapping[str, Any]:
    if name == "consent":
        return policy.purposes
    if name == "signals":
        return policy.signals
    if name == "muted":
        return policy.categories
    return {key: None for key in policy.categories if is_sensitive_category(policy, key)}


def _validate_map(
    name: str,
    changes: Mapping[str, Any],
    valid: Mapping[str, Any],
    now: datetime,
    problems: list[tuple[str, str]],
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in changes.items():
        where = f"{name}.{echo(key)}"
        if key not in valid:
            # Suggestions cost a comparison with every name: only for the problems that are listed.
            hint = _closest(key, valid) if len(problems) < MAX_PROBLEMS_LISTED else None
            problems.append(
                (
                    where,
                    f"unknown {_KINDS[name]}{f' (did you mean {hint}?)' if hint else ''}; "
                    f"valid: {', '.join(sorted(valid)) or '(none)'}",
                )
            )
            continue
        if value is None:
            result[key] = REMOVE
        elif name == "consent":
            if value not in CONSENT_VALUES:
                problems.append((where, 'must be "granted", "denied" or null'))
            result[key] = value
        elif name == "muted":
            result[key] = _validate_mute(where, value, now, problems)
        elif not isinstance(value, bool):
            problems.append((where, "must be true, false or null"))
        else:
            result[key] = value
    return result


def _validate_mute(where: str, value: Any, now: datetime, problems: list[tuple[str, str]]) -> datetime | None:
    if not isinstance(value, Mapping) or set(value) - {"until"}:
        problems.append(
            (
                where,
                'must be {"until": null} to mute, {"until": "<time>"} to snooze, or null to unmute',
            )
        )
        return None
    until = value.get("until")
    if until is None:
        return None
    try:
        moment = parse_time(until) if isinstance(until, str) else None
    except TimeOutOfRange:
        problems.append((f"{where}.until", "is out of range: in UTC it falls before year 1 or after year 9999"))
        return None
    except ValueError:
        moment = None
    if moment is None:
        problems.append(
            (
                f"{where}.until",
                "must be an ISO 8601 time with a zone, e.g. 2026-12-26T00:00:00Z, or null",
            )
        )
        return None
    if moment <= now:
        problems.append((f"{where}.until", "is in the past; a snooze must end in the future"))
    return moment


def _closest(name: str, valid: Mapping[str, Any]) -> str | None:
    """The valid name a look-alike was probably meant to be: a case variant, trailing blanks, a fullwidth
    or Cyrillic letter in place of a Latin one."""
    if len(name) > 100:
        return None
    plain = unicodedata.normalize("NFKC", name).strip().casefold()
    if plain in valid:
        return plain
    found = difflib.get_close_matches(plain, list(valid), n=1, cutoff=0.8)
    return found[0] if found else None


def is_sensitive_category(policy: Policy, category: str) -> bool:
    """What the closest category that says so says: `health.pregnancy` is sensitive because
    `health` is, unless it is itself marked `sensitive: false`."""
    parts = category.split(".")
    for depth in range(len(parts), 0, -1):
        entry = policy.categories.get(".".join(parts[:depth]))
        if entry is not None and entry.sensitive is not None:
            return entry.sensitive
    return False
