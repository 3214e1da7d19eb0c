"""`GET {prefix}/v1/review/queue`, `POST {prefix}/v1/review/{entry}`, `GET {prefix}/v1/review/audit`: the
human review queue for reviewers (docs/review.md). Anyone else gets the 404 of a path that is not there.

`ReviewDesk` decides; the JSON API here and the page (review_page.py) both go through it."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail.errors import StoreError
from guardrail.guard import Guard
from guardrail.review import KINDS, MAX_NOTE_CHARS, QueueEntry, ReviewDecision
from guardrail.runtime import Runtime
from guardrail.web.common import EVERY_METHOD, json_response, read_json_body, store_down
from guardrail.web.problem import problem

MAX_DECISION_BYTES = 16 * 1024
ITEM_KINDS = ("reported_item", "flagged_item")
# What a policy's category id may be (guardrail.policy.models.Identifier): a new category must be one.
CATEGORY_ID = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*")
ReviewerEndpoint = Callable[[Request, str], Awaitable[Response]]


class Refused(ValueError):
    """A decision that cannot be made as sent: (field, message) pairs, for a 422."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def not_found(request: Request) -> Response:
    """Exactly what the router answers for a path nobody serves."""
    return problem(404, "Not Found", f"There is nothing at {request.scope['path']}.")


class ReviewDesk:
    """Who may review, what waits, and deciding: shared by the API and the page."""

    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self.guard = guard
        self.queue = runtime.store.review_queue()

    async def reviewer(self, request: Request) -> str | None:
        """The reviewer asking, or None for anyone else (who then gets a 404)."""
        caller = await self.guard.identity.caller(request.scope)
        return caller.user if self.guard.is_reviewer(caller) else None

    async def find(self, entry_id: str) -> QueueEntry | None:
        """A waiting entry, or one decided before (so that a later decision can undo it)."""
        found = await self.queue.entry(entry_id)
        if found is not None:
            return found
        decided = self.queue.overlay.decisions.get(entry_id)
        if decided is None:
            return None
        return QueueEntry(entry_id, decided.kind, decided.subject, 0, decided.at, decided.at)

    async def decide(self, reviewer: str, entry: QueueEntry, body: Mapping[str, Any]) -> ReviewDecision:
        decision = self.decision(reviewer, entry, body)
        await self.queue.decide(decision)
        return decision

    def decision(self, reviewer: str, entry: QueueEntry, body: Mapping[str, Any]) -> ReviewDecision:
        """The decision `body` asks for, checked against the entry and the policy; `Refused` says why not."""
        problems: list[tuple[str, str]] = []
        choice = body.get("decision")
        note = body.get("note")
        if not isinstance(note, str) or not note.strip():
            problems.append(("note", "Write a note that says why: every decision needs one."))
        elif len(note) > MAX_NOTE_CHARS:
            problems.append(("note", f"A note may be at most {MAX_NOTE_CHARS} characters."))
        details: dict[str, Any] = {}
        if choice == "label":
            problems += self._label(entry, body, details)
        elif choice == "block":
            if entry.kind not in ITEM_KINDS:
                problems.append(("decision", "Only an item can be blocked; label or dismiss a category."))
        elif choice != "dismiss":
            problems.append(("decision", "Choose label, block or dismiss."))
        if problems:
            raise Refused(problems)
        assert isinstance(choice, str)
        assert isinstance(note, str)
        return ReviewDecision(
            time.time(), reviewer, entry.id, entry.kind, entry.subject, choice, note.strip(), **details
        )

    def _label(self, entry: QueueEntry, body: Mapping[str, Any], details: dict[str, Any]) -> list[tuple[str, str]]:
        if entry.kind != "unknown_category":
            return [("decision", "Only a category can be labelled; block or dismiss an item.")]
        categories = self.guard.policy.categories
        alias = body.get("alias_of")
        if alias is not None:
            if not isinstance(alias, str) or alias not in categories:
                known = ", ".join(sorted(categories)) or "(none)"
                return [("alias_of", f"{alias!r} is not a known category. Known categories: {known}.")]
            details["alias_of"] = alias
            return []
        sensitive, labels = body.get("sensitive"), body.get("label")
        problems: list[tuple[str, str]] = []
        if not CATEGORY_ID.fullmatch(entry.subject):
            problems.append(
                (
                    "decision",
                    f"{entry.subject!r} cannot be a category id (lowercase words joined by _ or -, dotted); "
                    "make it an alias of a known category instead.",
                )
            )
        if not isinstance(sensitive, bool):
            problems.append(("sensitive", "Say if the new category is sensitive: true or false (or give alias_of)."))
        locales = self.guard.policy.locales
        if not isinstance(labels, dict) or any(
            not isinstance(labels.get(locale), str) or not 0 < len(labels[locale].strip()) <= 80 for locale in locales
        ):
            problems.append(("label", f"Give a label of 1 to 80 characters in every language: {', '.join(locales)}."))
        if not problems:
            assert isinstance(labels, dict)
            details["sensitive"] = sensitive
            details["label"] = {locale: labels[locale].strip() for locale in locales}
        return problems


def review_routes(runtime: Runtime, guard: Guard, prefix: str) -> list[Route]:
    desk = ReviewDesk(runtime, guard)
    api = ReviewApi(desk)
    return [
        reviewers_only(desk, f"{prefix}/v1/review/queue", api.queue, "GET"),
        reviewers_only(desk, f"{prefix}/v1/review/audit", api.audit, "GET"),
        reviewers_only(desk, f"{prefix}/v1/review/{{entry}}", api.decide, "POST"),
    ]


def reviewers_only(desk: ReviewDesk, path: str, endpoint: ReviewerEndpoint, *methods: str) -> Route:
    """A route only reviewers know is there: to anyone else, whatever the method, the 404 of no route."""
    allowed = ", ".join(methods)

    async def checked(request: Request) -> Response:
        reviewer = await desk.reviewer(request)
        if reviewer is None:
            return not_found(request)
        if request.method not in methods:
            return problem(
                405, "Method Not Allowed", f"{request.method} is not allowed here; use {allowed}.",
                headers={"Allow": allowed},
            )  # fmt: skip
        return await endpoint(request, reviewer)

    return Route(path, checked, methods=EVERY_METHOD)


class ReviewApi:
    def __init__(self, desk: ReviewDesk) -> None:
        self.desk = desk

    async def queue(self, request: Request, reviewer: str) -> Response:
        try:
            entries = await self.desk.queue.entries()
            dropped = await self.desk.queue.dropped()
        except StoreError:
            return store_down()
        counts = {kind: sum(entry.kind == kind for entry in entries) for kind in KINDS}
        return json_response({"entries": [entry.to_json() for entry in entries], "counts": counts, "dropped": dropped})

    async def audit(self, request: Request, reviewer: str) -> Response:
        try:
            audit = await self.desk.queue.audit()
        except StoreError:
            return store_down()
        return json_response({"entries": [decision.to_json() for decision in audit]})

    async def decide(self, request: Request, reviewer: str) -> Response:
        body = await read_json_body(request, "a decision", MAX_DECISION_BYTES)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict):
            return problem(400, "Bad Request", "The body must be a JSON object with decision and note.")
        try:
            entry = await self.desk.find(request.path_params["entry"])
            if entry is None:
                return problem(404, "Not Found", "There is no such review entry. List the queue for the ids.")
            decision = await self.desk.decide(reviewer, entry, body)
        except Refused as exc:
            errors = [{"field": field, "message": message} for field, message in exc.problems]
            return problem(422, "Unprocessable Content", f"Nothing was decided. {exc}", errors=errors)
        except StoreError:
            return store_down()
        return json_response({**entry.to_json(), "decision": decision.to_json()})
