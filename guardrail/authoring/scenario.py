"""One user and request, written down: what `guardrail test` and `guardrail explain` decide items for.

A scenario gives the user's controls (the JSON of the controls API, docs/api.md, partial: what is not said is
the policy's default), or `anonymous`, and what the request says (GPC, age, TC string, Accept-Language) at a
fixed moment. The user context is built as the guard builds it for a request, at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from guardrail.controls import validate_patch
from guardrail.engine import UserContext
from guardrail.explain.render import explanation
from guardrail.guard import Guard
from guardrail.state import UserState


class Request(BaseModel):
    """What the request says besides who is asking."""

    model_config = ConfigDict(extra="forbid")

    gpc: bool = False
    age: int | None = Field(default=None, ge=0)
    tc_string: str | None = None
    accept_language: str | None = None
    now: AwareDatetime | None = None  # default: the moment the scenario runs


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # None: a signed-in user who never changed anything (the policy's defaults).
    controls: dict[str, Any] | None = None
    anonymous: bool = False
    request: Request = Field(default_factory=Request)
    route: str | None = None  # default: the policy's first route
    # "down": the store cannot answer; the controls above are what the guardrail last saw (its cache), and
    # the policy's fail_mode decides, as for a live request (docs/reliability.md).
    store: Literal["ok", "down"] = "ok"


# What GET /v1/controls shows that a user does not set: a file saved from it is taken as the controls it shows.
SHOWN_NOT_SET = frozenset({"user", "revision", "updated_at"})


def settable(controls: Mapping[str, Any]) -> dict[str, Any]:
    """The controls a user sets, from a body as given or as GET /v1/controls shows it."""
    return {key: value for key, value in controls.items() if key not in SHOWN_NOT_SET}


def user_state(guard: Guard, scenario: Scenario, now: datetime) -> UserState | None:
    """The stored state the scenario's controls make (`InvalidControls` names a bad one)."""
    if scenario.anonymous:
        return None
    if not scenario.controls:
        return UserState()
    return validate_patch(guard.policy, settable(scenario.controls), now).apply(UserState(), now)


def user_context(guard: Guard, scenario: Scenario, *, locale: str | None = None) -> UserContext:
    """The context the guard would build for this user and request (`locale` overrides the negotiation)."""
    request = scenario.request
    now = request.now or datetime.now(UTC)
    state = user_state(guard, scenario, now)
    if locale is None:
        accept = request.accept_language.encode("latin-1", "replace") if request.accept_language else None
        locale = guard.locales.choose(state.locale if state is not None else None, accept)
    down = scenario.store == "down" and not scenario.anonymous
    unavailable, degraded = guard.when_store_is_down() if down else (False, False)
    return UserContext(
        guard.compiled,
        state,
        guard.request_signals(request.gpc, request.age, request.tc_string),
        locale=locale,
        now=now,
        store_unavailable=unavailable,
        degraded=degraded,
        explain=explanation,
    )
