"""Checking a change to a user's controls (a JSON merge patch, RFC 7386) against the policy.

Patches are validated *before* any store sees them: a store only ever applies a `ControlsPatch`
(guardrail/state.py) that is known to be good, so nothing is half-applied.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from guardrail.echo import echo
from guardrail.engine.compiled import is_sensitive_category
from guardrail.errors import InvalidControls
from guardrail.policy.models import Policy
from guardrail.state import REMOVE, UNSET, ControlsPatch, TimeOutOfRange, parse_time

MAX_MUTED_TOPICS = 200
# A pause of personal suggestions ends by itself, at most this far ahead.
MAX_PAUSE = timedelta(days=90)
# A refused change lists this many problems at most: the answer to a change naming thousands of
# unknown keys stays small.
MAX_PROBLEMS_LISTED = 10
CONSENT_VALUES = ("granted", "denied")
MAPS = ("consent", "signals", "muted", "sensitive")
_KINDS = {"consent": "purpose", "signals": "signal", "muted": "category", "sensitive": "sensitive category"}
_PLURALS = {"consent": "purposes", "signals": "signals", "muted": "categories", "sensitive": "sensitive categories"}


def validate_patch(policy: Policy, body: Any, now: datetime) -> ControlsPatch:
    """Check a merge patch against the policy; raise `InvalidControls` naming every bad field."""
    problems: list[tuple[str, str]] = []
    if not isinstance(body, Mapping):
        raise InvalidControls([("(body)", 'send a JSON object, e.g. {"signals": {"location_precise": false}}')])

    personalization: Any = UNSET
    locale: Any = UNSET
    paused_until: Any = UNSET
    maps: dict[str, Mapping[str, Any] | None] = {}
    read_only = ("user", "revision", "updated_at")
    allowed = ("personalization", "locale", *MAPS, "paused_until")
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
        elif key == "paused_until":
            paused_until = None if value is None else _validate_pause(value, now, problems)
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
    return ControlsPatch(personalization=personalization, locale=locale, paused_until=paused_until, maps=maps)


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


def _validate_pause(value: Any, now: datetime, problems: list[tuple[str, str]]) -> datetime | None:
    moment = _time(value, "paused_until", problems)
    if moment is None:
        return None
    if moment <= now:
        problems.append(("paused_until", "is in the past; a pause must end in the future (null resumes now)"))
    elif moment - now > MAX_PAUSE:
        problems.append(("paused_until", f"is too far ahead; a pause ends within {MAX_PAUSE.days} days"))
    return moment


def _time(value: Any, where: str, problems: list[tuple[str, str]]) -> datetime | None:
    """An ISO 8601 time with a zone, in UTC; None (with the problem noted) if it is not one."""
    try:
        moment = parse_time(value) if isinstance(value, str) else None
    except TimeOutOfRange:
        problems.append((where, "is out of range: in UTC it falls before year 1 or after year 9999"))
        return None
    except ValueError:
        moment = None
    if moment is None:
        problems.append((where, "must be an ISO 8601 time with a zone, e.g. 2026-12-26T00:00:00Z, or null"))
    return moment


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
    moment = _time(until, f"{where}.until", problems)
    if moment is None:
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
