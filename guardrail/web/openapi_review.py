"""The review endpoints in the OpenAPI document (docs/review.md), present when the policy names reviewers."""

from __future__ import annotations

from typing import Any

from guardrail.review import DECISIONS, KINDS, MAX_NOTE_CHARS

_TIME = {"type": "string", "format": "date-time"}
_IDS = {"type": "array", "items": {"type": "string"}}
_REVIEWERS_ONLY = "Reviewers only (the policy's `review:`); to anyone else this path answers 404, as if it were absent."


def review_paths(prefix: str) -> dict[str, Any]:
    def answer(description: str, schema: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{schema}"}
        return {"description": description, "content": {"application/json": {"schema": ref}}}

    errors = {status: {"$ref": f"#/components/responses/{name}"} for status, name in (("404", "NotFound"),)}
    store_down = {"503": {"$ref": "#/components/responses/ServiceUnavailable"}}
    return {
        f"{prefix}/v1/review/queue": {
            "get": {
                "tags": ["review"],
                "operationId": "reviewQueue",
                "summary": "What waits for a reviewer: unknown categories, reported and flagged items",
                "description": _REVIEWERS_ONLY,
                "responses": {"200": answer("The queue, oldest first.", "ReviewQueue"), **errors, **store_down},
            }
        },
        f"{prefix}/v1/review/audit": {
            "get": {
                "tags": ["review"],
                "operationId": "reviewAudit",
                "summary": "Every decision reviewers made: who, when, what and why, oldest first; never rewritten",
                "description": _REVIEWERS_ONLY,
                "responses": {"200": answer("The audit.", "ReviewAudit"), **errors, **store_down},
            }
        },
        f"{prefix}/v1/review/{{entry}}": {
            "post": {
                "tags": ["review"],
                "operationId": "reviewDecide",
                "summary": "Decide an entry: label a category, block an item, or dismiss; a later decision undoes it",
                "description": _REVIEWERS_ONLY,
                "parameters": [{"name": "entry", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReviewRequest"}}},
                },
                "responses": {
                    "200": answer("The entry as decided.", "ReviewDecided"),
                    **{
                        status: {"$ref": f"#/components/responses/{name}"}
                        for status, name in (
                            ("400", "BadRequest"),
                            ("404", "NotFound"),
                            ("413", "ContentTooLarge"),
                            ("415", "UnsupportedMediaType"),
                            ("422", "UnprocessableContent"),
                            ("503", "ServiceUnavailable"),
                        )
                    },
                },
            }
        },
    }


def review_schemas(locales: list[str]) -> dict[str, Any]:
    entry = {
        "type": "object",
        "required": ["id", "kind", "count", "first_seen", "last_seen", "examples", "route", "routes"],
        "properties": {
            "id": {"type": "string"},
            "kind": {"enum": list(KINDS)},
            "category": {"type": "string"},
            "item": {"type": "string"},
            "route": {"type": ["string", "null"], "description": "The route it was first seen on."},
            "routes": _IDS,
            "count": {"type": "integer", "minimum": 0},
            "first_seen": _TIME,
            "last_seen": _TIME,
            "examples": {**_IDS, "maxItems": 5, "description": "Up to 5 item ids."},
            "reasons": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "Reports only: how many for each reason. Never who reported.",
            },
            "title": {"type": "string"},
        },
    }
    audit_entry = {
        "type": "object",
        "required": ["at", "reviewer", "entry", "kind", "decision", "note", "details"],
        "properties": {
            "at": _TIME,
            "reviewer": {"type": "string"},
            "entry": {"type": "string"},
            "kind": {"enum": list(KINDS)},
            "decision": {"enum": list(DECISIONS)},
            "note": {"type": "string"},
            "details": {"type": "object"},
        },
    }
    label = {
        "type": "object",
        "required": list(locales),
        "properties": {locale: {"type": "string", "minLength": 1, "maxLength": 80} for locale in locales},
    }
    return {
        "ReviewEntry": entry,
        "ReviewQueue": {
            "type": "object",
            "required": ["entries", "counts", "dropped"],
            "properties": {
                "entries": {"type": "array", "items": {"$ref": "#/components/schemas/ReviewEntry"}},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                "dropped": {"type": "integer", "description": "Entries dropped to keep the queue within its bound."},
            },
        },
        "ReviewAuditEntry": audit_entry,
        "ReviewAudit": {
            "type": "object",
            "required": ["entries"],
            "properties": {"entries": {"type": "array", "items": {"$ref": "#/components/schemas/ReviewAuditEntry"}}},
        },
        "ReviewRequest": {
            "type": "object",
            "required": ["decision", "note"],
            "properties": {
                "decision": {"enum": list(DECISIONS)},
                "note": {"type": "string", "minLength": 1, "maxLength": MAX_NOTE_CHARS},
                "alias_of": {"type": "string", "description": "label: a known category this one is read as."},
                "sensitive": {"type": "boolean", "description": "label: a new category, sensitive or not."},
                "label": {**label, "description": "label: the new category's name in every language."},
            },
        },
        "ReviewDecided": {
            "allOf": [
                {"$ref": "#/components/schemas/ReviewEntry"},
                {"type": "object", "properties": {"decision": {"$ref": "#/components/schemas/ReviewAuditEntry"}}},
            ]
        },
    }
