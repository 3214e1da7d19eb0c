"""What the HTML pages share (the controls page, guardrail/web/page.py, each item's "why?" page,
guardrail/web/why_page.py, and the review page, guardrail/web/review_page.py): rendering in the caller's
language, error pages, reading a form, and the checks before a change (who, CSRF, rate limit).

The pages work without JavaScript: plain forms, native controls, server-side rendering (Jinja2,
autoescaped); each POST carries a signed CSRF token in a hidden field (guardrail/web/csrf.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from guardrail.guard import Guard
from guardrail.messages import message
from guardrail.runtime import Runtime
from guardrail.web.common import STORE_DOWN_HEADERS, STORE_DOWN_STATUS, caller, choose_locale, read_body
from guardrail.web.csrf import CsrfTokens, csrf_key
from guardrail.web.ratelimit import ChangeLimiter

MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
# No external resources, no scripts, no framing: the page needs nothing but its own inline style.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_ENV = Environment(
    loader=PackageLoader("guardrail.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class PageBase:
    # The page's messages are `{MESSAGES}.<key>` in guardrail/messages/*.json.
    MESSAGES = "page"

    def __init__(self, runtime: Runtime, guard: Guard, limiter: ChangeLimiter, prefix: str) -> None:
        self.runtime = runtime
        self.guard = guard
        self.policy = guard.policy
        self.limiter = limiter
        self.prefix = prefix
        self.csrf = CsrfTokens(csrf_key())

    # -- helpers ------------------------------------------------------------------------------

    @property
    def action(self) -> str:
        return f"{self.prefix}/controls"

    def _locale(self, request: Request, user_locale: str | None = None) -> str:
        return choose_locale(self.guard, request, user_locale)

    def _render(self, template: str, locale: str, status: int = 200, headers: Mapping[str, str] | None = None,
                **context: Any) -> Response:  # fmt: skip
        def t(key: str, **params: Any) -> str:
            return message(locale, f"{self.MESSAGES}.{key}", **params)

        html = _ENV.get_template(template).render(locale=locale, t=t, **context)
        return HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})

    def _error(self, locale: str, status: int, text: str | None = None, *, fields: list[tuple[str, str]] | None = None,
               headers: Mapping[str, str] | None = None, back: bool = True, **params: Any) -> Response:  # fmt: skip
        return self._render(
            "error.html",
            locale,
            status,
            headers,
            heading=message(locale, f"page.error.{status}.title"),
            text=text if text is not None else message(locale, f"page.error.{status}.text", **params),
            fields=fields or [],
            back=self.action if back else None,
        )

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The urlencoded form (first value of each name), or None when it is too large."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        raw = await read_body(request, MAX_FORM_BYTES)
        if raw is None:
            return None
        if media != FORM_TYPE:
            return {}
        form: dict[str, str] = {}
        for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
            form.setdefault(name, value)
        return form

    async def _guard_change(self, request: Request) -> tuple[str, str, dict[str, str]] | Response:
        """Who is asking, in which language, with which form; or the error page that stops the change."""
        user = await caller(self.guard, request)
        locale = self._locale(request)
        if user is None:
            return self._error(locale, 401, back=False)
        form = await self._form(request)
        if form is None:
            return self._error(locale, 422, fields=[("(form)", f"at most {MAX_FORM_BYTES} bytes")])
        if not self.csrf.verify(user, form.get("csrf")):
            return self._error(locale, 403)
        return user, locale, form

    async def _rate_limited(self, user: str, locale: str) -> Response | None:
        wait = await self.limiter.retry_after(user)
        if wait is None:
            return None
        return self._error(locale, 429, headers={"Retry-After": str(wait)}, seconds=wait)

    def _store_down(self, locale: str) -> Response:
        return self._error(locale, STORE_DOWN_STATUS, headers=STORE_DOWN_HEADERS)
