"""The HTML controls page (docs/api.md, "The controls page"): `GET/POST {prefix}/controls`,
`POST {prefix}/controls/pause` and `POST {prefix}/controls/erase`.

A POST applies the whole form as one validated merge patch (guardrail/web/page_form.py), the same way
`PATCH /v1/controls` does (what the pages share: guardrail/web/page_base.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from guardrail.controls import validate_patch
from guardrail.errors import InvalidControls, StoreError
from guardrail.explain.render import receipt_text, until_text
from guardrail.guard import Guard
from guardrail.messages import message
from guardrail.runtime import Runtime
from guardrail.state import ControlsPatch, format_time
from guardrail.store import DecisionRecord
from guardrail.web.common import ERASE, caller, count_changes, route
from guardrail.web.page_base import PageBase
from guardrail.web.page_form import form_patch
from guardrail.web.ratelimit import ChangeLimiter

MAX_HIDDEN_SHOWN = 10
# The "take a break" buttons (templates/controls.html): how many days each pauses personal suggestions
# for; "resume" ends a pause.
PAUSE_DAYS = (1, 7, 30)
LANGUAGE_NAMES = {"en": "English", "ko": "한국어"}


def page_routes(runtime: Runtime, guard: Guard, limiter: ChangeLimiter, prefix: str) -> list[Route]:
    """The page's routes (a wrong method is a problem+json 405, as on the API)."""
    page = ControlsPage(runtime, guard, limiter, prefix)
    return [
        route(f"{prefix}/controls", page.controls, "GET", "POST"),
        route(f"{prefix}/controls/pause", page.pause, "POST"),
        route(f"{prefix}/controls/erase", page.erase, "POST"),
    ]


class ControlsPage(PageBase):
    # -- endpoints ----------------------------------------------------------------------------

    async def controls(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._save(request)
        user = await caller(self.guard, request)
        if user is None:
            return self._error(self._locale(request), 401, back=False)
        store = self.runtime.store
        try:
            state = await store.load(user)
            records = await store.decisions(user, limit=50)
        except StoreError:
            return self._store_down(self._locale(request))
        locale = self._locale(request, state.locale if state is not None else None)
        now = datetime.now(UTC)
        policy, compiled = self.policy, self.guard.compiled
        mutes = state.active_mutes(now) if state is not None else {}
        paused = state.pause_end(now) if state is not None else None
        signals = state.signals if state is not None else {}
        opted_in = state.sensitive if state is not None else {}
        topics = []
        for name in policy.categories:
            until = mutes.get(name)
            muted = name in mutes
            topics.append(
                {
                    "name": name,
                    "label": compiled.label("category", name, locale),
                    "state": ("mute" if until is None else "snoozed") if muted else "show",
                    "until": until_text(until) if until is not None else None,
                }
            )
        hidden = self._hidden(records, locale)
        return self._render(
            "controls.html",
            locale,
            action=self.action,
            erase_action=f"{self.action}/erase",
            export_url=f"{self.prefix}/v1/export",
            pause_action=f"{self.action}/pause",
            paused_until=until_text(paused) if paused is not None else None,
            paused_at=format_time(paused),
            csrf=self.csrf.issue(user),
            saved=request.query_params.get("saved") == "1",
            erased=request.query_params.get("erased") == "1",
            personalization=state.personalization if state is not None else True,
            purposes=[
                {
                    "name": name,
                    "label": compiled.label("purpose", name, locale),
                    "granted": (state.consent if state is not None else {}).get(name, purpose.default) == "granted",
                }
                for name, purpose in policy.purposes.items()
            ],
            signals=[
                {
                    "name": name,
                    "label": compiled.label("signal", name, locale),
                    "allowed": signals.get(name) is not False,
                }
                for name in policy.signals
            ],
            topics=topics,
            sensitive=[
                {"name": name, "label": compiled.label("category", name, locale), "opted_in": bool(opted_in.get(name))}
                for name in compiled.sensitive_categories
            ],
            languages=[(code, LANGUAGE_NAMES.get(code, code)) for code in policy.locales],
            user_locale=state.locale if state is not None else None,
            hidden=hidden,
        )

    def _hidden(self, records: Sequence[DecisionRecord], locale: str) -> list[dict[str, Any]]:
        """What was hidden recently, newest first: each item once (per route), with its title when the route
        names one, when it was last hidden and why, and how many times it was hidden in these records."""
        compiled = self.guard.compiled
        hidden: dict[tuple[str, str], dict[str, Any]] = {}
        for record in records:
            for index, (item_id, action, reasons, because) in enumerate(record.items):
                if action != "hide":
                    continue
                entry = hidden.get((record.route, item_id))
                if entry is not None:
                    entry["count"] += 1
                    entry["title"] = entry["title"] or record.title(index)
                elif len(hidden) < MAX_HIDDEN_SHOWN:
                    moment = datetime.fromtimestamp(record.created_at, UTC)
                    hidden[record.route, item_id] = {
                        "item": item_id,
                        "title": record.title(index),
                        "count": 1,
                        "when": format_time(moment),
                        "when_text": moment.strftime("%Y-%m-%d %H:%M UTC"),
                        "text": receipt_text(compiled, locale, reasons, because),
                    }
        return list(hidden.values())

    async def _save(self, request: Request) -> Response:
        checked = await self._guard_change(request)
        if isinstance(checked, Response):
            return checked
        user, locale, form = checked
        limited = await self._rate_limited(user, locale)
        if limited is not None:
            return limited
        now = datetime.now(UTC)
        body, problems = form_patch(self.policy, self.guard.compiled.sensitive_categories, form, now)
        try:
            patch = validate_patch(self.policy, body, now)
        except InvalidControls as exc:
            problems.extend(exc.problems)
        if problems:
            return self._error(locale, 422, fields=problems)
        return await self._apply(user, locale, patch, now)

    async def _apply(self, user: str, locale: str, patch: ControlsPatch, now: datetime) -> Response:
        """A validated change stored and counted, then back to the page, which says it was saved."""
        try:
            await self.runtime.store.patch(user, patch, if_match=None, now=now)
        except StoreError:
            return self._store_down(locale)
        count_changes(self.runtime, patch.changed_fields())
        return RedirectResponse(f"{self.action}?saved=1", status_code=303, headers={"Cache-Control": "no-store"})

    async def pause(self, request: Request) -> Response:
        """The "take a break" form: `pause` is a number of days (PAUSE_DAYS) or "resume"."""
        checked = await self._guard_change(request)
        if isinstance(checked, Response):
            return checked
        user, locale, form = checked
        choice = form.get("pause", "")
        choices = [str(days) for days in PAUSE_DAYS]
        if choice not in (*choices, "resume"):
            return self._error(locale, 422, fields=[("pause", f"must be one of {', '.join(choices)} or resume")])
        limited = await self._rate_limited(user, locale)
        if limited is not None:
            return limited
        now = datetime.now(UTC)
        until = None if choice == "resume" else format_time(now + timedelta(days=int(choice)))
        try:
            patch = validate_patch(self.policy, {"paused_until": until}, now)
        except InvalidControls as exc:
            return self._error(locale, 422, fields=exc.problems)
        return await self._apply(user, locale, patch, now)

    async def erase(self, request: Request) -> Response:
        checked = await self._guard_change(request)
        if isinstance(checked, Response):
            return checked
        user, locale, form = checked
        if form.get("confirm") != "yes":
            return self._error(locale, 422, message(locale, "page.error.422.confirm"))
        limited = await self._rate_limited(user, locale)
        if limited is not None:
            return limited
        try:
            await self.runtime.store.erase(user)
        except StoreError:
            return self._store_down(locale)
        count_changes(self.runtime, ERASE)
        return RedirectResponse(f"{self.action}?erased=1", status_code=303, headers={"Cache-Control": "no-store"})
