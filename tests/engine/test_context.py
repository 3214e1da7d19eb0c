"""`UserContext`: what a user's state and a request boil down to before any item is decided."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from guardrail.engine import CompiledPolicy, RequestSignals, UserContext
from guardrail.explain.render import explanation
from guardrail.state import UserState
from tests.conftest import BASE_POLICY, make_policy

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
COMPILED = CompiledPolicy(make_policy())


def every_purpose_follows_gpc() -> CompiledPolicy:
    purposes = copy.deepcopy(BASE_POLICY["purposes"])
    for purpose in purposes.values():
        purpose["follows_gpc"] = True
    return CompiledPolicy(make_policy(purposes=purposes))


CONSENTED = UserState(consent={"personalization": "granted"})
ALL_GRANTED = UserState(consent={"personalization": "granted", "sharing": "granted", "measurement": "granted"})
ALL_DENIED = UserState(consent={"personalization": "denied", "sharing": "denied", "measurement": "denied"})


def context(
    state: UserState | None,
    request: RequestSignals = RequestSignals(),  # noqa: B008 - frozen, so one shared default is safe
    *,
    compiled: CompiledPolicy = COMPILED,
    now: datetime = NOW,
    store_unavailable: bool = False,
    degraded: bool = False,
) -> UserContext:
    return UserContext(
        compiled,
        state,
        request,
        locale="en",
        now=now,
        store_unavailable=store_unavailable,
        degraded=degraded,
        explain=explanation,
    )


@pytest.mark.parametrize(
    "ctx",
    [
        pytest.param(context(UserState(personalization=False, consent=ALL_GRANTED.consent)), id="personalization_off"),
        pytest.param(context(ALL_DENIED), id="no_consent"),
        pytest.param(context(None), id="anonymous"),
        pytest.param(
            context(ALL_GRANTED, RequestSignals(tcf=frozenset((name, False) for name in ALL_GRANTED.consent))),
            id="tcf_denies_every_purpose",
        ),
        pytest.param(
            context(ALL_GRANTED, RequestSignals(gpc=True), compiled=every_purpose_follows_gpc()),
            id="gpc_all_purposes_follow_gpc",
        ),
        pytest.param(context(ALL_GRANTED, RequestSignals(minor=True)), id="minor"),
        pytest.param(context(ALL_GRANTED, store_unavailable=True), id="store_unavailable"),
        pytest.param(
            context(UserState(consent=ALL_GRANTED.consent, signals=dict.fromkeys(COMPILED.signals, False))),
            id="every_signal_off",
        ),
    ],
)
def test_nothing_personal_is_allowed(ctx: UserContext) -> None:
    assert ctx.personalized_allowed is False


@pytest.mark.parametrize(
    "ctx",
    [
        pytest.param(context(CONSENTED), id="consented"),
        pytest.param(context(ALL_GRANTED), id="all_granted"),
        pytest.param(context(UserState(), RequestSignals(tcf=frozenset({("personalization", True)}))), id="tcf_grant"),
        pytest.param(
            context(UserState(consent=ALL_GRANTED.consent, signals={"watch_history": False})), id="one_signal_off"
        ),
        pytest.param(context(ALL_GRANTED, RequestSignals(gpc=True)), id="gpc_on_some_purposes"),
    ],
)
def test_personal_picks_are_allowed(ctx: UserContext) -> None:
    assert ctx.personalized_allowed is True


def test_gpc_only_closes_the_purposes_that_follow_it() -> None:
    ctx = context(ALL_GRANTED, RequestSignals(gpc=True))
    closed = sorted(name for name, reasons in ctx.signal_reasons.items() if reasons)
    assert closed == ["partner_data", "shared_segments"]


@pytest.mark.parametrize(
    ("muted", "now", "valid_until"),
    [
        pytest.param({}, NOW, float("inf"), id="no_mutes"),
        pytest.param({"gambling": None}, NOW, float("inf"), id="only_permanent_mutes"),
        pytest.param(
            {"gambling": None, "sports": NOW + timedelta(hours=2), "dating": NOW + timedelta(hours=1)},
            NOW,
            (NOW + timedelta(hours=1)).timestamp(),
            id="earliest_snooze_end",
        ),
        pytest.param(
            {"sports": NOW + timedelta(hours=2), "dating": NOW + timedelta(hours=1)},
            NOW + timedelta(hours=1),
            (NOW + timedelta(hours=2)).timestamp(),
            id="ended_snooze_ignored",
        ),
        pytest.param({"sports": NOW - timedelta(seconds=1)}, NOW, float("inf"), id="only_past_snoozes"),
    ],
)
def test_valid_until_is_the_next_snooze_end(
    muted: dict[str, datetime | None], now: datetime, valid_until: float
) -> None:
    assert context(UserState(muted=muted), now=now).valid_until == valid_until


def test_active_mutes_depend_on_now() -> None:
    state = UserState(muted={"gambling": None, "sports": NOW + timedelta(hours=1)})
    assert context(state).muted == {"gambling", "sports"}
    assert context(state, now=NOW + timedelta(hours=1)).muted == {"gambling"}


@pytest.mark.parametrize(
    ("store_unavailable", "degraded", "expected"),
    [(False, False, False), (True, False, True), (False, True, True)],
    ids=["normal", "store_unavailable", "degraded"],
)
def test_degraded(store_unavailable: bool, degraded: bool, expected: bool) -> None:
    ctx = context(CONSENTED, store_unavailable=store_unavailable, degraded=degraded)
    assert ctx.degraded is expected
