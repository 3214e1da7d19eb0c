"""Each kept item's "why am I seeing this?" page (docs/api.md, "Why am I seeing this?"):
`GET {prefix}/why/{decision}/{item}` says which rule decided, which of the caller's data it used and which
topic the item is in; its one-click forms (`POST` to the same path, CSRF, rate-limited like every change)
mute or snooze that topic, turn off a signal it used, or report the item.

What the page offers is `item_view`'s `actions`: a form can only do what the JSON twin lists, so a forged
`do=mute&category=...` for a topic the item does not have changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from guardrail.controls import validate_patch
from guardrail.errors import InvalidControls, StoreError
from guardrail.guard import Guard
from guardrail.messages import message
from guardrail.runtime import Runtime
from guardrail.state import REPORT_REASONS
from guardrail.web.common import caller, count_changes, route
from guardrail.web.decisions import lookup_item
from guardrail.web.item_view import MAX_NOTE_CHARS, REPORT, item_view
from guardrail.web.page_base import PageBase
from guardrail.web.ratelimit import ChangeLimiter
from guardrail.web.reports import Reports, reason_and_note_problems
from guardrail.why_links import why_path

# The form field naming what each action's form changes.
_TARGET = {"mute": "category", "snooze": "category", "signal_off": "signal"}


def why_routes(runtime: Runtime, guard: Guard, limiter: ChangeLimiter, reports: Reports, prefix: str) -> list[Route]:
    page = WhyPage(runtime, guard, limiter, prefix, reports)
    # `path`: an item id may hold a slash (the link writes it %2F, which servers decode).
    return [route(f"{prefix}/why/{{decision_id}}/{{item_id:path}}", page.why, "GET", "POST")]


class WhyPage(PageBase):
    def __init__(self, runtime: Runtime, guard: Guard, limiter: ChangeLimiter, prefix: str, reports: Reports) -> None:
        super().__init__(runtime, guard, limiter, prefix)
        self.reports = reports

    def _not_found(self, locale: str) -> Response:
        return self._error(locale, 404, days=f"{self.policy.decision_retention_days:g}")

    async def why(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._act(request)
        user = await caller(self.guard, request)
        if user is None:
            return self._error(self._locale(request), 401, back=False)
        store = self.runtime.store
        try:
            state, found, reported = await lookup_item(store, user, *_item_of(request))
        except StoreError:
            return self._store_down(self._locale(request))
        locale = self._locale(request, state.locale if state is not None else None)
        if found is None:
            return self._not_found(locale)
        record, index = found
        view = item_view(self.guard, record, index, locale, state, datetime.now(UTC), reported)
        done = request.query_params.get("done")
        return self._render(
            "why.html",
            locale,
            view=view,
            forms=_forms(view),
            reasons=[(reason, message(locale, f"why.report.{reason}")) for reason in REPORT_REASONS],
            action=why_path(self.prefix, record.id, view["item"]),
            controls=self.action,
            csrf=self.csrf.issue(user),
            when=datetime.fromtimestamp(record.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            done=done if done in ("change", REPORT) else None,
            max_note=MAX_NOTE_CHARS,
        )

    async def _act(self, request: Request) -> Response:
        checked = await self._guard_change(request)
        if isinstance(checked, Response):
            return checked
        user, locale, form = checked
        store = self.runtime.store
        try:
            state, found, reported = await lookup_item(store, user, *_item_of(request))
        except StoreError:
            return self._store_down(locale)
        if found is None:
            return self._not_found(locale)
        record, index = found
        now = datetime.now(UTC)
        view = item_view(self.guard, record, index, locale, state, now, reported)
        kind = form.get("do", "")
        chosen = _chosen(view["actions"], kind, form)
        if chosen is None:
            return self._error(locale, 422, message(locale, "page.error.422.action"), back=False)
        note = form.get("note", "").strip() or None
        if kind == REPORT:
            problems = reason_and_note_problems(form.get("reason"), note)
            if problems:
                return self._error(locale, 422, fields=problems)
        limited = await self._rate_limited(user, locale)
        if limited is not None:
            return limited
        back = why_path(self.prefix, record.id, view["item"])
        try:
            if kind == REPORT:
                await self.reports.file(user, record, index, form["reason"], note)
                return _done(back, REPORT)
            patch = validate_patch(self.policy, chosen["body"], now)
            await store.patch(user, patch, if_match=None, now=now)
        except InvalidControls as exc:
            return self._error(locale, 422, fields=exc.problems)
        except StoreError:
            return self._store_down(locale)
        count_changes(self.runtime, patch.changed_fields())
        return _done(back, "change")


def _item_of(request: Request) -> tuple[str, str]:
    """The decision and the item the path names."""
    return request.path_params["decision_id"], request.path_params["item_id"]


def _chosen(actions: list[dict[str, Any]], kind: str, form: dict[str, str]) -> dict[str, Any] | None:
    """The action the form asks for, if the item's view offers it."""
    target = _TARGET.get(kind)
    for action in actions:
        if action["kind"] == kind and (target is None or action.get(target) == form.get(target)):
            return action
    return None


def _forms(view: dict[str, Any]) -> list[dict[str, str]]:
    """The one-click forms: each action but the report, as (do, field, value, text)."""
    forms = []
    for action in view["actions"]:
        target = _TARGET.get(action["kind"])
        if target is not None:
            forms.append({"do": action["kind"], "field": target, "value": action[target], "text": action["text"]})
    return forms


def _done(back: str, what: str) -> Response:
    return RedirectResponse(f"{back}?done={what}", status_code=303, headers={"Cache-Control": "no-store"})
