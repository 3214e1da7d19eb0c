"""The schemas of the OpenAPI document (`guardrail.web.openapi`): controls, patches, decisions, the export,
problems.

The maps in the controls are keyed by the policy's own purposes, signals and categories
(`propertyNames`), so a client generated from the document knows what it may send.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from guardrail.bodies import TITLE_CHARS
from guardrail.controls import CONSENT_VALUES, MAX_MUTED_TOPICS, MAX_PAUSE
from guardrail.engine.compiled import is_sensitive_category
from guardrail.engine.decisions import Action, Reason
from guardrail.policy.models import Policy
from guardrail.state import DEFAULT_STATE

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _keyed_by(names: Iterable[str], value: dict[str, Any], *, nullable: bool = False) -> dict[str, Any]:
    """An object whose keys are `names` and whose values are `value`."""
    keys = sorted(names)
    schema: dict[str, Any] = {"type": ["object", "null"] if nullable else "object"}
    if keys:
        schema["propertyNames"] = {"enum": keys}
        schema["additionalProperties"] = value
    else:
        schema["maxProperties"] = 0  # an empty `enum` is not allowed; nothing is
    return schema


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return {"oneOf": [{"type": "null"}, schema]}


def schemas(policy: Policy) -> dict[str, Any]:
    purposes = list(policy.purposes)
    signals = list(policy.signals)
    categories = list(policy.categories)
    sensitive = [name for name in categories if is_sensitive_category(policy, name)]
    consent = {"enum": list(CONSENT_VALUES)}
    mute = {
        "type": "object",
        "properties": {"until": {**_NULLABLE_TIME, "description": "When the snooze ends; null: muted until unmuted."}},
        "additionalProperties": False,
    }
    locale = {"enum": list(policy.locales)}
    problem_error = {
        "type": "object",
        "required": ["field", "message"],
        "properties": {
            "field": {"type": "string", "description": 'Where, e.g. "signals.location_precise" or "(body)".'},
            "message": {"type": "string"},
        },
    }
    return {
        "Controls": {
            "type": "object",
            "description": "Your controls, as stored. Maps are keyed by the policy's purposes, signals and categories.",
            # Every key `UserState.to_json` writes, so the two cannot drift apart.
            "required": list(DEFAULT_STATE.to_json("", datetime.now(UTC))),
            "properties": {
                "user": {"type": "string"},
                "personalization": {"type": "boolean", "description": "false: nothing is personalized."},
                "consent": {**_keyed_by(purposes, consent), "description": "Consent by purpose."},
                "signals": {**_keyed_by(signals, {"type": "boolean"}), "description": "false: this signal is unused."},
                "muted": {
                    **_keyed_by(categories, {**mute, "required": ["until"]}),
                    "description": "Muted categories; a mute with `until` is a snooze that ends by itself.",
                },
                "sensitive": {
                    **_keyed_by(sensitive, {"type": "boolean"}),
                    "description": "true: recommendations may use this sensitive category.",
                },
                "locale": {**_or_null(locale), "description": "The language of explanations; null: as asked."},
                "paused_until": {
                    **_NULLABLE_TIME,
                    "description": "Until then, nothing is personalized, as if `personalization` were false; "
                    "null: not paused (a pause that has ended reads as null).",
                },
                "revision": {"type": "integer", "minimum": 0},
                "updated_at": _NULLABLE_TIME,
            },
        },
        "ControlsPatch": {
            "type": "object",
            "description": (
                "A JSON merge patch (RFC 7386) of Controls: set what changes; null removes a key (or clears a map). "
                "`user`, `revision` and `updated_at` are read-only."
            ),
            "additionalProperties": False,
            "properties": {
                "personalization": {"type": ["boolean", "null"], "description": "null: back to true."},
                "locale": _or_null(locale),
                "paused_until": {
                    **_NULLABLE_TIME,
                    "description": f"A future time, at most {MAX_PAUSE.days} days ahead, pauses personal suggestions "
                    "until then; null resumes them now.",
                },
                "consent": _keyed_by(purposes, _or_null(consent), nullable=True),
                "signals": _keyed_by(signals, {"type": ["boolean", "null"]}, nullable=True),
                "muted": {
                    **_keyed_by(categories, _or_null(mute), nullable=True),
                    "maxProperties": MAX_MUTED_TOPICS,
                    "description": 'A category: {"until": null} mutes it, {"until": <a future time>} snoozes it, '
                    "null unmutes it.",
                },
                "sensitive": _keyed_by(sensitive, {"type": ["boolean", "null"]}, nullable=True),
            },
        },
        "DecisionSummary": {
            "type": "object",
            "required": ["decision", "created_at", "route", "mode", "policy", "degraded", "kept", "hidden"],
            "properties": {
                "decision": {"type": "string"},
                "created_at": _TIME,
                "route": {"type": "string", "description": "The guarded route's template."},
                "mode": {"enum": ["enforce", "shadow"]},
                "policy": {"type": "string", "description": "The id of the policy that decided."},
                "degraded": {"type": "boolean", "description": "true: decided without your stored controls."},
                "kept": {"type": "integer", "minimum": 0},
                "hidden": {"type": "integer", "minimum": 0},
            },
        },
        "DecisionList": {
            "type": "object",
            "required": ["decisions"],
            "properties": {"decisions": {"type": "array", "items": {"$ref": "#/components/schemas/DecisionSummary"}}},
        },
        "Decision": {
            "allOf": [
                {"$ref": "#/components/schemas/DecisionSummary"},
                {
                    "type": "object",
                    "required": ["items"],
                    "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/DecisionItem"}}},
                },
            ]
        },
        "DecisionItem": {
            "type": "object",
            "required": ["id", "action", "reasons", "because", "text"],
            "properties": {
                "id": {"type": "string"},
                "title": {
                    "type": ["string", "null"],
                    "maxLength": TITLE_CHARS,
                    "description": (
                        "The item's title, when the route names a display field (`fields: {title: ...}`);"
                        " null for an item without one."
                    ),
                },
                "action": {"enum": [action.value for action in Action]},
                "reasons": {
                    "type": "array",
                    "items": {"enum": [reason.value for reason in Reason]},
                    "description": "Why it was hidden, the deciding reason first; empty unless hidden.",
                },
                "because": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The signals the recommendation relied on.",
                },
                "text": {"type": "string", "description": "The same, in plain language."},
            },
        },
        "ExportedDecision": {
            "allOf": [
                {"$ref": "#/components/schemas/Decision"},
                {
                    "type": "object",
                    "required": ["locale"],
                    "properties": {"locale": {"type": "string", "description": "The language the page was in."}},
                },
            ],
            "description": "A decision record, every item's `text` in the export's language.",
        },
        "Export": {
            "type": "object",
            "description": "Everything stored about you (GDPR Art. 15 access, Art. 20 portability).",
            "required": ["user", "exported_at", "policy", "locale", "controls", "decisions", "reasons", "reports"],
            "properties": {
                "user": {"type": "string"},
                "exported_at": _TIME,
                "policy": {"type": "string", "description": "The id of the policy in force when exported."},
                "locale": {"type": "string", "description": "The language of every text in this export."},
                "controls": {"$ref": "#/components/schemas/Controls"},
                "decisions": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ExportedDecision"},
                    "description": "Every decision record kept, newest first.",
                },
                "reasons": {
                    "type": "object",
                    "propertyNames": {"enum": [reason.value for reason in Reason]},
                    "additionalProperties": {"type": "string"},
                    "description": "What each reason code used in `decisions` means, in plain language.",
                },
                "reports": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Report"},
                    "description": "Your reports about recommendations, newest first.",
                },
            },
        },
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "format": "uri-reference"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": problem_error},
                "decision": {"type": "string", "description": "The decision the problem is about, if any."},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "policy", "store"],
            "properties": {
                "status": {"enum": ["ready", "unavailable"]},
                "policy": {"type": "string"},
                "store": {"type": "string", "description": '"ok", or what went wrong.'},
                "upstream": {
                    "type": "string",
                    "description": '`guardrail serve`: "ok" when the upstream takes connections, or what is wrong.',
                },
            },
        },
    }
