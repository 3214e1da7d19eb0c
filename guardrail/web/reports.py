"""`POST {prefix}/v1/reports`: the caller reports an item of one of their decisions (docs/api.md#reports).

A report is kept for its author (the export shows it, erasure removes it) and counted by reason
(`guardrail_reports_total`); a user reports an item of a decision once, and a second report of it
answers with the first. The "why?" page's report form files through the same `Reports.file`. A new
report also goes to the human review queue (`ReviewQueue.note_report`), without who sent it.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.errors import StoreError
from guardrail.guard import Guard
from guardrail.runtime import Runtime
from guardrail.state import REPORT_REASONS, Report
from guardrail.store import DecisionRecord
from guardrail.web.common import (
    caller,
    json_response,
    read_json_body,
    route,
    store_down,
    too_many_changes,
    unauthorized,
)
from guardrail.web.item_view import MAX_NOTE_CHARS
from guardrail.web.problem import problem
from guardrail.web.ratelimit import ChangeLimiter

MAX_REPORT_BYTES = 4 * 1024
_FIELDS = ("decision", "item", "reason", "note")


def report_routes(reports: Reports, prefix: str) -> list[Route]:
    return [route(f"{prefix}/v1/reports", reports.create, "POST")]


class Reports:
    def __init__(self, runtime: Runtime, guard: Guard, limiter: ChangeLimiter) -> None:
        self.runtime = runtime
        self.guard = guard
        self.limiter = limiter

    async def file(
        self, user: str, record: DecisionRecord, index: int, reason: str, note: str | None
    ) -> tuple[Report, bool]:
        """Keep the caller's report of item `index` of `record` and count it: (the report, True); or (the one
        kept before, False) if they had already reported it. Raises StoreError."""
        item_id = str(record.item_ids[index])
        report = Report(record.id, item_id, reason, time.time(), record.route, record.title(index), note)
        added = await self.runtime.store.add_report(user, report)
        if added is None:
            for kept in await self.runtime.store.reports(user):
                if kept.key == report.key:
                    return kept, False
            return report, False  # the first one expired in between: this one stands for it
        self.runtime.metrics.reports.labels(reason).inc()
        # A new report waits for a reviewer too (docs/review.md), counted by reason: who sent it stays here.
        self.runtime.store.review_queue().note_report(record.route, item_id, reason, title=record.title(index))
        return added, True

    async def create(self, request: Request) -> Response:
        user = await caller(self.guard, request)
        if user is None:
            return unauthorized()
        body = await read_json_body(request, "a report", MAX_REPORT_BYTES)
        if isinstance(body, Response):
            return body
        problems = report_problems(body)
        if problems:
            return problem(
                422,
                "Unprocessable Content",
                "Nothing was reported. " + "; ".join(f"{field}: {text}" for field, text in problems) + ".",
                errors=[{"field": field, "message": text} for field, text in problems],
            )
        wait = await self.limiter.retry_after(user)
        if wait is not None:
            return too_many_changes(wait)
        decision, item = body["decision"], body["item"]
        try:
            record = await self.runtime.store.decision(user, decision)
            index = record.index_of(item) if record is not None else None
            if record is None or index is None:
                # As for decisions: whether someone else's exists is nobody else's business.
                return problem(404, "Not Found", f"You have no decision {decision!r} with an item {item!r}.")
            report, created = await self.file(user, record, index, body["reason"], body.get("note") or None)
        except StoreError:
            return store_down()
        return json_response(report.to_json(), status=201 if created else 200)


def report_problems(body: Any) -> list[tuple[str, str]]:
    """What is wrong with a report's body: (field, what to do) pairs, none when it is good."""
    if not isinstance(body, dict):
        return [("(body)", 'must be a JSON object such as {"decision": "...", "item": "...", "reason": "other"}')]
    problems = [(name, "is not a field of a report; use " + ", ".join(_FIELDS)) for name in body if name not in _FIELDS]
    for name in ("decision", "item"):
        if not isinstance(body.get(name), str) or not body[name]:
            problems.append((name, "is required: the id, as text, from the decision you are reporting"))
    return problems + reason_and_note_problems(body.get("reason"), body.get("note"))


def reason_and_note_problems(reason: Any, note: Any) -> list[tuple[str, str]]:
    """What is wrong with a report's reason and note, from the API or the "why?" page's form."""
    problems = []
    if reason not in REPORT_REASONS:
        problems.append(("reason", f"must be one of {', '.join(REPORT_REASONS)}"))
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
        problems.append(("note", f"must be text of at most {MAX_NOTE_CHARS} characters, or left out"))
    return problems
