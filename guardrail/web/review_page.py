"""The review page (docs/review.md): `GET {prefix}/review` and `POST {prefix}/review/{entry}`, for reviewers.

It works without JavaScript: one plain form per entry, with a signed CSRF token, decided through the same
`ReviewDesk` as `POST /v1/review/{entry}`. Anyone but a reviewer gets the 404 of a path that is not there.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from guardrail.errors import StoreError
from guardrail.explain.render import until_text
from guardrail.guard import Guard
from guardrail.messages import message
from guardrail.review import MAX_NOTE_CHARS
from guardrail.runtime import Runtime
from guardrail.web.page import LANGUAGE_NAMES
from guardrail.web.page_base import MAX_FORM_BYTES, PAGE_HEADERS, PageBase
from guardrail.web.ratelimit import ChangeLimiter
from guardrail.web.review_api import Refused, ReviewDesk, reviewers_only

RECENT_DECISIONS = 20


def review_page_routes(runtime: Runtime, guard: Guard, limiter: ChangeLimiter, prefix: str) -> list[Route]:
    desk = ReviewDesk(runtime, guard)
    page = ReviewPage(desk, runtime, guard, limiter, prefix)
    return [
        reviewers_only(desk, f"{prefix}/review", page.show, "GET"),
        reviewers_only(desk, f"{prefix}/review/{{entry}}", page.decide, "POST"),
    ]


class ReviewPage(PageBase):
    MESSAGES = "review"

    def __init__(self, desk: ReviewDesk, runtime: Runtime, guard: Guard, limiter: ChangeLimiter, prefix: str) -> None:
        super().__init__(runtime, guard, limiter, prefix)
        self.desk = desk

    @property
    def action(self) -> str:
        return f"{self.prefix}/review"

    def _error(self, locale: str, status: int, text: str | None = None, *, fields: list[tuple[str, str]] | None = None,
               headers: Mapping[str, str] | None = None, back: bool = True, **params: Any) -> Response:  # fmt: skip
        title = message(locale, f"review.error.{status}.title" if status != 404 else "review.title")
        return self._render(
            "error.html",
            locale,
            status,
            headers,
            heading=title,
            text=text if text is not None else message(locale, f"review.error.{status}.text", **params),
            fields=fields or [],
            back=self.action if back else None,
        )

    async def show(self, request: Request, reviewer: str) -> Response:
        locale = self._locale(request)
        queue = self.desk.queue
        try:
            entries = await queue.entries()
            audit = await queue.audit()
        except StoreError:
            return self._store_down(locale)
        compiled = self.guard.compiled
        return self._render(
            "review.html",
            locale,
            action=self.action,
            csrf=self.csrf.issue(_bound(reviewer)),
            decided=request.query_params.get("decided") == "1",
            note_chars=MAX_NOTE_CHARS,
            categories=[(name, compiled.label("category", name, locale)) for name in self.guard.policy.categories],
            languages=[(code, LANGUAGE_NAMES.get(code, code)) for code in self.guard.policy.locales],
            entries=[
                {
                    "id": entry.id,
                    "kind": entry.kind,
                    "subject": entry.subject,
                    "title": entry.title,
                    "count": entry.count,
                    "first": until_text(_moment(entry.first_seen)),
                    "last": until_text(_moment(entry.last_seen)),
                    "examples": entry.examples,
                    "routes": entry.routes,
                    "reasons": sorted(entry.reasons.items()),
                }
                for entry in entries
            ],
            audit=[
                {
                    "when": until_text(_moment(decision.at)),
                    "reviewer": decision.reviewer,
                    "decision": decision.decision,
                    "note": decision.note,
                }
                for decision in reversed(audit[-RECENT_DECISIONS:])
            ],
        )

    async def decide(self, request: Request, reviewer: str) -> Response:
        locale = self._locale(request)
        form = await self._form(request)
        if form is None:
            return self._error(locale, 422, fields=[("(form)", f"at most {MAX_FORM_BYTES} bytes")])
        if not self.csrf.verify(_bound(reviewer), form.get("csrf")):
            return self._error(locale, 403)
        try:
            entry = await self.desk.find(request.path_params["entry"])
            if entry is None:
                return self._error(locale, 404)
            await self.desk.decide(reviewer, entry, self._body(form))
        except Refused as exc:
            return self._error(locale, 422, fields=exc.problems)
        except StoreError:
            return self._store_down(locale)
        return RedirectResponse(f"{self.action}?decided=1", status_code=303, headers=PAGE_HEADERS)

    def _body(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The form as the JSON body `POST /v1/review/{entry}` takes."""
        choice = form.get("decision")
        body: dict[str, Any] = {"note": form.get("note", "")}
        if choice == "alias":
            body.update(decision="label", alias_of=form.get("alias_of"))
        elif choice == "new":
            labels = {code: form.get(f"label.{code}", "") for code in self.guard.policy.locales}
            body.update(decision="label", sensitive=form.get("sensitive") == "on", label=labels)
        else:
            body["decision"] = choice
        return body


def _bound(reviewer: str) -> str:
    # A token for the review page is not one for the controls page, and the other way round.
    return f"review\n{reviewer}"


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
