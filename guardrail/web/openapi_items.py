"""The OpenAPI paths and schemas of acting on one item (docs/api.md, "Why am I seeing this?"): the item's
view with its `actions`, and reports. Joined into the document by guardrail/web/openapi.py."""

from __future__ import annotations

from typing import Any

from guardrail.state import REPORT_REASONS
from guardrail.web.item_view import MAX_NOTE_CHARS, MUTE, REPORT, SIGNAL_OFF, SNOOZE

_JSON = "application/json"
_TIME = {"type": "string", "format": "date-time"}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def item_paths(prefix: str, errors: dict[str, str]) -> dict[str, Any]:
    """`errors`: the name of each error status's response component."""

    def refs(*statuses: str) -> dict[str, Any]:
        return {status: {"$ref": f"#/components/responses/{errors[status]}"} for status in statuses}

    return {
        f"{prefix}/v1/decisions/{{decision_id}}/items/{{item_id}}": {
            "get": {
                "tags": ["decisions"],
                "operationId": "getDecisionItem",
                "summary": "Why you saw one item, and what you can do about it",
                "description": (
                    'The JSON twin of the item\'s "why am I seeing this?" page (the `why` link of its explanation): '
                    "the rule that decided, the data it used and the item's topics as labels, and the `actions` "
                    "you can take, each with the request that takes it."
                ),
                "parameters": [
                    {"name": "decision_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "description": "The item's id, percent-encoded.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"200": _ok("The item.", "DecisionItemView"), **refs("401", "404", "503")},
            }
        },
        f"{prefix}/v1/reports": {
            "post": {
                "tags": ["reports"],
                "operationId": "reportItem",
                "summary": "Report an item of one of your decisions",
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/ReportRequest"}}},
                },
                "responses": {
                    "201": _ok("Reported.", "Report"),
                    "200": _ok("You had reported this item already: your first report.", "Report"),
                    **refs("400", "401", "404", "413", "415", "422", "429", "503"),
                },
            }
        },
    }


def item_schemas() -> dict[str, Any]:
    report_reason = {"enum": list(REPORT_REASONS)}
    return {
        "ReportRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["decision", "item", "reason"],
            "properties": {
                "decision": {"type": "string", "minLength": 1},
                "item": {"type": "string", "minLength": 1, "description": "The item's id, as text."},
                "reason": report_reason,
                "note": {"type": ["string", "null"], "maxLength": MAX_NOTE_CHARS},
            },
        },
        "Report": {
            "type": "object",
            "required": ["decision", "item", "title", "route", "reason", "note", "created_at"],
            "properties": {
                "decision": {"type": "string"},
                "item": {"type": "string"},
                "title": {"type": ["string", "null"]},
                "route": {"type": "string"},
                "reason": report_reason,
                "note": {"type": ["string", "null"]},
                "created_at": _TIME,
            },
        },
        "ItemAction": {
            "type": "object",
            "required": ["kind", "text", "method", "href", "content_type", "body"],
            "description": "One thing you can do about the item: send `body` to `href` with `method`.",
            "properties": {
                "kind": {"enum": [MUTE, SNOOZE, SIGNAL_OFF, REPORT]},
                "text": {"type": "string"},
                "method": {"enum": ["PATCH", "POST"]},
                "href": {"type": "string"},
                "content_type": {"type": "string"},
                "body": {"type": "object"},
                "category": {"type": "string"},
                "signal": {"type": "string"},
                "until": _TIME,
                "reasons": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["reason", "text"],
                        "properties": {"reason": report_reason, "text": {"type": "string"}},
                    },
                },
            },
        },
        "DecisionItemView": {
            "type": "object",
            "required": [
                "decision",
                "item",
                "title",
                "created_at",
                "route",
                "action",
                "reasons",
                "text",
                "rule",
                "categories",
                "signals",
                "reported",
                "actions",
            ],
            "properties": {
                "decision": {"type": "string"},
                "item": {"type": "string"},
                "title": {"type": ["string", "null"]},
                "created_at": _TIME,
                "route": {"type": "string"},
                "action": {"enum": ["keep", "discreet", "hide"]},
                "reasons": {"type": "array", "items": {"type": "string"}},
                "text": {"type": "string"},
                "rule": {"type": "string", "description": "The rule that decided, in plain language."},
                "categories": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "label", "sensitive", "known"],
                        "properties": {
                            "name": {"type": "string"},
                            "label": {"type": "string"},
                            "sensitive": {"type": "boolean"},
                            "known": {"type": "boolean"},
                        },
                    },
                },
                "signals": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "label"],
                        "properties": {"name": {"type": "string"}, "label": {"type": "string"}},
                    },
                    "description": "The data the recommendation used.",
                },
                "reported": {"anyOf": [report_reason, {"type": "null"}]},
                "actions": {"type": "array", "items": {"$ref": "#/components/schemas/ItemAction"}},
            },
        },
    }
