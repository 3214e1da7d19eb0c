"""The guard's context cache: users whose controls mean the same share one context (memory stays flat
with millions of users), and users whose controls differ never do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from guardrail.engine import RequestSignals
from guardrail.guard import Guard
from guardrail.state import UserState
from tests.conftest import make_policy

NO_REQUEST_SIGNALS = RequestSignals()
GRANTED = {"personalization": "granted"}


def test_users_with_the_same_controls_share_one_context() -> None:
    guard = Guard(make_policy())
    alice = UserState(consent=GRANTED, revision=3)
    bob = UserState(consent=GRANTED, revision=9, locale=None)
    first = guard.context("alice", alice, NO_REQUEST_SIGNALS, None)
    assert guard.context("bob", bob, NO_REQUEST_SIGNALS, None) is first
    assert guard.context("alice", alice, NO_REQUEST_SIGNALS, None) is first


def test_users_whose_controls_differ_do_not() -> None:
    guard = Guard(make_policy())
    granted, _ = guard.context("a", UserState(consent=GRANTED), NO_REQUEST_SIGNALS, None)
    others = [
        ctx
        for ctx, _ in [
            guard.context("b", UserState(), NO_REQUEST_SIGNALS, None),
            guard.context("c", None, NO_REQUEST_SIGNALS, None),  # anonymous is not "never changed anything"
            guard.context("d", UserState(consent=GRANTED, personalization=False), NO_REQUEST_SIGNALS, None),
            guard.context("e", UserState(consent=GRANTED, muted={"sports": None}), NO_REQUEST_SIGNALS, None),
            guard.context("f", UserState(consent=GRANTED), RequestSignals(gpc=True), None),
            guard.context("g", UserState(consent=GRANTED, locale="ko"), NO_REQUEST_SIGNALS, None),
        ]
    ]
    assert len({id(ctx) for ctx in [granted, *others]}) == 7
    assert granted.personalized_allowed
    assert not others[2].personalized_allowed  # personalization off


def test_a_shared_context_still_ends_with_the_snooze() -> None:
    guard = Guard(make_policy())
    ended = datetime.now(UTC) - timedelta(seconds=1)
    snoozed = UserState(consent=GRANTED, muted={"sports": ended})
    ctx, _ = guard.context("a", snoozed, NO_REQUEST_SIGNALS, None)
    assert "sports" not in ctx.muted
