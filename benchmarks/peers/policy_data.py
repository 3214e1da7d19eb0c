"""The policy file and a user's controls boiled down to plain JSON data, for the peer arms.

A team writing the checks themselves (`naive.py`) or in a policy engine (`rego.py`) would hand
their code exactly this: no pydantic models, no compiled lookups. Built once at start-up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from guardrail.engine.compiled import is_sensitive_category
from guardrail.messages import CATALOGS
from guardrail.policy.models import Policy

TEXT_KEYS = ("item.popular", "item.because", "item.inferred", "item.discreet", "list.and")
ROUTE = "/recommendations"


def policy_data(policy: Policy, locale: str = "en") -> dict[str, Any]:
    route = next(r for r in policy.routes if r.path == ROUTE)
    catalog = CATALOGS[locale]
    return {
        "default_signals": list(route.default_signals),
        "purposes": {name: {"default": p.default} for name, p in policy.purposes.items()},
        "signals": {
            name: {
                "purpose": s.purpose,
                "sensitivity": s.sensitivity,
                "third_party": s.third_party,
                "label": s.label.get(locale) or s.label[policy.default_locale],
            }
            for name, s in policy.signals.items()
        },
        # Resolved for every category of the policy (the closest one up the tree that says so decides).
        "sensitive": {name: is_sensitive_category(policy, name) for name in policy.categories},
        "weights": policy.invasiveness.weights.model_dump(),
        "fresh_seconds": policy.invasiveness.fresh_activity_seconds,
        "discreet_at": policy.invasiveness.discreet_at,
        "hide_at": policy.invasiveness.hide_at,
        "controls": f"{policy.prefix}/controls" if policy.prefix is not None else None,
        "texts": {key: catalog[key] for key in TEXT_KEYS},
    }


def user_data(controls: dict[str, Any]) -> dict[str, Any]:
    """A user's state from a controls body as the API takes it (`{"consent": {...}, "muted": {...}}`),
    with snoozes as epoch seconds (None: muted until unmuted)."""
    muted = {}
    for topic, mute in controls.get("muted", {}).items():
        until = mute.get("until") if mute is not None else None
        muted[topic] = datetime.fromisoformat(until).timestamp() if until else None
    return {
        "personalization": controls.get("personalization", True),
        "consent": dict(controls.get("consent", {})),
        "signals": dict(controls.get("signals", {})),
        "muted": muted,
        "sensitive": dict(controls.get("sensitive", {})),
    }
