"""`GET {prefix}/v1/export`: everything stored about the caller as one JSON download (docs/api.md#export),
the answer to a GDPR access (Art. 15) or portability (Art. 20) request.

The controls as `GET /v1/controls` shows them, every decision record the store keeps for the caller with
each item explained, what each reason code used means, and the caller's reports (newest first), all in
the caller's language: their locale control, else Accept-Language, else the
policy's default, as the controls page chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.errors import StoreError
from guardrail.guard import Guard
from guardrail.messages import message
from guardrail.policy.models import MAX_DECISIONS_PER_USER
from guardrail.runtime import Runtime
from guardrail.state import DEFAULT_STATE, format_time
from guardrail.store import DecisionRecord
from guardrail.web.common import caller, choose_locale, json_response, route, store_down, unauthorized
from guardrail.web.decisions import receipt

FILENAME = "guardrail-export.json"
EXPORT_HEADERS = {
    "Content-Disposition": f'attachment; filename="{FILENAME}"',
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def export_routes(runtime: Runtime, guard: Guard, prefix: str) -> list[Route]:
    return [route(f"{prefix}/v1/export", DataExport(runtime, guard).export, "GET")]


class DataExport:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self.runtime = runtime
        self.guard = guard

    async def export(self, request: Request) -> Response:
        user = await caller(self.guard, request)
        if user is None:
            return unauthorized()
        store = self.runtime.store
        try:
            state = await store.load(user)
            # Every record kept: the store keeps at most the policy's `decisions_per_user` (at most this).
            records = await store.decisions(user, limit=MAX_DECISIONS_PER_USER)
            reports = await store.reports(user)
        except StoreError:
            return store_down()
        now = datetime.now(UTC)
        locale = choose_locale(self.guard, request, state.locale if state is not None else None)
        controls = (state if state is not None else DEFAULT_STATE).to_json(user, now)
        return json_response(
            {
                "user": user,
                "exported_at": format_time(now),
                "policy": self.guard.policy.policy_id,
                "locale": locale,
                "controls": controls,
                "decisions": [self._decision(record, locale) for record in records],
                "reasons": reason_glossary(locale, records),
                "reports": [report.to_json() for report in reports],
            },
            headers=EXPORT_HEADERS,
        )

    def _decision(self, record: DecisionRecord, locale: str) -> dict[str, Any]:
        """The record's receipt, as `GET /v1/decisions/{id}` shows it but in the caller's language, with
        the language the record was made in."""
        found = receipt(record, self.guard.compiled, locale)
        items = found.pop("items")
        return {**found, "locale": record.locale, "items": items}


def reason_glossary(locale: str, records: Sequence[DecisionRecord]) -> dict[str, str]:
    """What each reason code the records use means, in `locale`, the codes in order of first use."""
    codes: dict[str, None] = {}
    for record in records:
        for _, _, reasons, _ in record.items:
            codes.update(dict.fromkeys(map(str, reasons)))  # a `Reason` is a str; JSON keys must be plain ones
    return {code: message(locale, f"reason.{code}") for code in codes}
