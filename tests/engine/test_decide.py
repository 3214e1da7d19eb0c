"""The per-item rules of docs/architecture.md §2-§4: actions, reasons in precedence order, scores and explanations.

Every table case builds a `UserContext` directly (no store, no HTTP) and checks the action and the
whole ordered reasons tuple, so a reason that appears, disappears or changes place fails the case.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from guardrail.controls import validate_patch
from guardrail.engine import Action, CompiledPolicy, ItemDecision, Reason, RequestSignals, UserContext, decide
from guardrail.messages import message
from guardrail.policy.models import Policy
from guardrail.state import UserState
from tests.conftest import BASE_POLICY, make_policy
from tests.engine.support import COMPILED, CONSENTED, NOW, context

LATER = NOW + timedelta(hours=1)

MINOR = Reason.MINOR_PROTECTION
GPC = Reason.GPC_OPT_OUT
STORE = Reason.STORE_UNAVAILABLE
OFF = Reason.PERSONALIZATION_OFF
MUTED = Reason.TOPIC_MUTED
SIGNAL_OFF = Reason.SIGNAL_OFF
SENSITIVE = Reason.SENSITIVE_NEEDS_OPT_IN
TCF = Reason.TCF_NO_CONSENT
NO_CONSENT = Reason.NO_CONSENT
INVASIVE = Reason.TOO_INVASIVE
UNKNOWN = Reason.UNKNOWN_CATEGORY

KEEP, DISCREET, HIDE = Action.KEEP, Action.DISCREET, Action.HIDE

# A known user who never touched a control: purpose defaults apply.
NO_CONTROLS = UserState()
ALL_GRANTED = UserState(consent={"personalization": "granted", "sharing": "granted", "measurement": "granted"})
ALL_DENIED = UserState(consent={"personalization": "denied", "sharing": "denied", "measurement": "denied"})
# Everything allowed, every sensitive category opted into: only invasiveness can hide an item.
OPEN = UserState(
    consent={"personalization": "granted", "sharing": "granted", "measurement": "granted"},
    sensitive={"gambling": True, "health": True, "dating": True},
)


def consented(**controls: Any) -> UserState:
    """A user who said yes to personalization, with some other controls set."""
    return UserState(consent={"personalization": "granted"}, **controls)


def tc_string(**verdicts: bool) -> frozenset[tuple[str, bool]]:
    """What a decoded TC string says: (purpose, allowed) for the purposes it covers."""
    return frozenset(verdicts.items())


@dataclass(frozen=True)
class Case:
    id: str
    state: UserState | None
    categories: tuple[str, ...]
    signals: tuple[str, ...]
    action: Action
    reasons: tuple[Reason, ...] = ()
    gpc: bool = False
    minor: bool = False
    tcf: frozenset[tuple[str, bool]] | None = None
    store_unavailable: bool = False
    age: float | None = None
    inferred: bool = False
    now: datetime = NOW

    def decide(self) -> ItemDecision:
        ctx = context(
            self.state,
            gpc=self.gpc,
            minor=self.minor,
            tcf=self.tcf,
            store_unavailable=self.store_unavailable,
            now=self.now,
        )
        return decide(ctx, self.categories, self.signals, self.age, self.inferred)


def table(*cases: Case) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", cases, ids=[case.id for case in cases])


def check(case: Case) -> None:
    decision = case.decide()
    assert (decision.action, decision.reasons) == (case.action, case.reasons)


# --- precedence: each adjacent pair of the order, then all of them at once -----------------------


@table(
    Case("minor_beats_gpc", ALL_GRANTED, ("movies",), ("partner_data",), HIDE, (MINOR, GPC), gpc=True, minor=True),
    Case(
        "gpc_beats_store_unavailable",
        CONSENTED,
        ("movies",),
        ("partner_data",),
        HIDE,
        (GPC, STORE),
        gpc=True,
        store_unavailable=True,
    ),
    Case(
        "store_unavailable_beats_topic_muted",
        consented(muted={"movies": None}),
        ("movies",),
        ("watch_history",),
        HIDE,
        (STORE, MUTED),
        store_unavailable=True,
    ),
    Case(
        "personalization_off_beats_topic_muted",
        consented(personalization=False, muted={"sports": None}),
        ("sports",),
        ("watch_history",),
        HIDE,
        (OFF, MUTED),
    ),
    Case(
        "topic_muted_beats_signal_off",
        consented(muted={"sports": None}, signals={"watch_history": False}),
        ("sports",),
        ("watch_history",),
        HIDE,
        (MUTED, SIGNAL_OFF),
    ),
    Case(
        "signal_off_beats_sensitive_opt_in",
        consented(signals={"watch_history": False}),
        ("gambling",),
        ("watch_history",),
        HIDE,
        (SIGNAL_OFF, SENSITIVE),
    ),
    Case(
        "sensitive_opt_in_beats_tcf",
        CONSENTED,
        ("gambling",),
        ("watch_history",),
        HIDE,
        (SENSITIVE, TCF),
        tcf=tc_string(personalization=False),
    ),
    Case(
        "tcf_beats_no_consent",
        CONSENTED,
        ("movies",),
        ("watch_history", "shared_segments"),
        HIDE,
        (TCF, NO_CONSENT),
        tcf=tc_string(personalization=False),
    ),
    Case(
        "no_consent_beats_too_invasive",
        NO_CONTROLS,
        ("movies",),
        ("partner_data",),
        HIDE,
        (NO_CONSENT, INVASIVE),
        age=60,
        inferred=True,
    ),
    Case(
        "every_reason_but_store_in_order",
        UserState(personalization=False, muted={"gambling": None}, signals={"partner_data": False}),
        ("gambling",),
        ("partner_data", "shared_segments"),
        HIDE,
        (MINOR, GPC, OFF, MUTED, SIGNAL_OFF, SENSITIVE, TCF, NO_CONSENT, INVASIVE),
        gpc=True,
        minor=True,
        tcf=tc_string(personalization=False),
        age=10,
        inferred=True,
    ),
    Case(
        "store_unavailable_stands_in_for_unknown_controls",
        UserState(personalization=False, signals={"watch_history": False}),
        ("movies",),
        ("watch_history",),
        HIDE,
        (STORE,),
        store_unavailable=True,
    ),
)
def test_first_reason_decides(case: Case) -> None:
    check(case)


def test_reasons_are_declared_in_precedence_order() -> None:
    assert list(Reason) == [
        *(MINOR, GPC, STORE, OFF, MUTED, SIGNAL_OFF, SENSITIVE, TCF, NO_CONSENT, INVASIVE, UNKNOWN),
        Reason.BLOCKED_BY_REVIEW,
    ]


# --- GPC, TC string, stored consent, purpose defaults --------------------------------------------


@table(
    Case("gpc_sale_or_share_signal_beats_grant", ALL_GRANTED, ("movies",), ("partner_data",), HIDE, (GPC,), gpc=True),
    Case("gpc_follows_gpc_purpose_beats_grant", ALL_GRANTED, ("movies",), ("shared_segments",), HIDE, (GPC,), gpc=True),
    Case(
        "gpc_beats_tcf_grant",
        ALL_GRANTED,
        ("movies",),
        ("shared_segments",),
        HIDE,
        (GPC,),
        gpc=True,
        tcf=tc_string(sharing=True),
    ),
    Case("gpc_leaves_plain_signal", ALL_GRANTED, ("movies",), ("watch_history",), KEEP, gpc=True),
    Case("gpc_leaves_default_granted_purpose", NO_CONTROLS, ("movies",), ("play_count",), KEEP, gpc=True),
    Case("gpc_leaves_non_personalized", ALL_GRANTED, ("movies",), (), KEEP, gpc=True),
    Case(
        "gpc_one_shared_signal_hides_item",
        ALL_GRANTED,
        ("movies",),
        ("watch_history", "partner_data"),
        HIDE,
        (GPC,),
        gpc=True,
    ),
    Case("gpc_anonymous", None, ("movies",), ("shared_segments",), HIDE, (GPC, NO_CONSENT), gpc=True),
    Case(
        "tcf_denial_beats_stored_grant",
        CONSENTED,
        ("movies",),
        ("watch_history",),
        HIDE,
        (TCF,),
        tcf=tc_string(personalization=False),
    ),
    Case(
        "tcf_grant_beats_stored_denial",
        UserState(consent={"personalization": "denied"}),
        ("movies",),
        ("watch_history",),
        KEEP,
        tcf=tc_string(personalization=True),
    ),
    Case(
        "tcf_grant_beats_purpose_default",
        NO_CONTROLS,
        ("movies",),
        ("watch_history",),
        KEEP,
        tcf=tc_string(personalization=True),
    ),
    Case(
        "tcf_denial_beats_purpose_default_grant",
        NO_CONTROLS,
        ("movies",),
        ("play_count",),
        HIDE,
        (TCF,),
        tcf=tc_string(measurement=False),
    ),
    Case(
        "tcf_silent_stored_grant_decides",
        CONSENTED,
        ("movies",),
        ("watch_history",),
        KEEP,
        tcf=tc_string(sharing=False),
    ),
    Case(
        "tcf_silent_stored_denial_decides",
        UserState(consent={"personalization": "denied"}),
        ("movies",),
        ("watch_history",),
        HIDE,
        (NO_CONSENT,),
        tcf=tc_string(sharing=True),
    ),
    Case(
        "tcf_silent_purpose_default_decides",
        NO_CONTROLS,
        ("movies",),
        ("watch_history",),
        HIDE,
        (NO_CONSENT,),
        tcf=tc_string(sharing=True),
    ),
    Case("tcf_empty_string_stored_grant", CONSENTED, ("movies",), ("watch_history",), KEEP, tcf=frozenset()),
    Case("stored_grant", CONSENTED, ("movies",), ("watch_history",), KEEP),
    Case(
        "stored_denial",
        UserState(consent={"personalization": "denied"}),
        ("movies",),
        ("watch_history",),
        HIDE,
        (NO_CONSENT,),
    ),
    Case("stored_denial_of_default_granted", ALL_DENIED, ("movies",), ("play_count",), HIDE, (NO_CONSENT,)),
    Case("purpose_default_granted", NO_CONTROLS, ("movies",), ("play_count",), KEEP),
    Case("purpose_default_denied", NO_CONTROLS, ("movies",), ("watch_history",), HIDE, (NO_CONSENT,)),
    Case("anonymous_personalized", None, ("movies",), ("watch_history",), HIDE, (NO_CONSENT,)),
    Case("anonymous_default_granted_purpose", None, ("movies",), ("play_count",), HIDE, (NO_CONSENT,)),
    Case(
        "anonymous_with_tcf_grant",
        None,
        ("movies",),
        ("watch_history",),
        HIDE,
        (NO_CONSENT,),
        tcf=tc_string(personalization=True),
    ),
    Case("unknown_signal", ALL_GRANTED, ("movies",), ("mind_reading",), HIDE, (NO_CONSENT,)),
    Case(
        "unknown_beside_known_signal", ALL_GRANTED, ("movies",), ("watch_history", "mind_reading"), HIDE, (NO_CONSENT,)
    ),
)
def test_consent_sources(case: Case) -> None:
    check(case)


# --- minors, store failures, user controls --------------------------------------------------------


@table(
    Case("minor_personalized", ALL_GRANTED, ("movies",), ("watch_history",), HIDE, (MINOR,), minor=True),
    Case("minor_default_granted_purpose", NO_CONTROLS, ("movies",), ("play_count",), HIDE, (MINOR,), minor=True),
    Case("minor_non_personalized", ALL_GRANTED, ("movies",), (), KEEP, minor=True),
    Case("minor_non_personalized_anonymous", None, ("sports",), (), KEEP, minor=True),
    Case("minor_non_personalized_sensitive", ALL_GRANTED, ("gambling",), (), HIDE, (MINOR,), minor=True),
    Case("minor_non_personalized_sensitive_child", ALL_GRANTED, ("health.pregnancy",), (), HIDE, (MINOR,), minor=True),
    Case("minor_non_personalized_not_sensitive_child", ALL_GRANTED, ("health.fitness",), (), KEEP, minor=True),
    Case(
        "minor_beats_sensitive_opt_in",
        consented(sensitive={"gambling": True}),
        ("gambling",),
        ("watch_history",),
        HIDE,
        (MINOR,),
        minor=True,
    ),
    Case(
        "minor_and_missing_opt_in", CONSENTED, ("gambling",), ("watch_history",), HIDE, (MINOR, SENSITIVE), minor=True
    ),
    Case(
        "minor_non_personalized_muted", consented(muted={"movies": None}), ("movies",), (), HIDE, (MUTED,), minor=True
    ),
    Case("store_unavailable_anonymous", None, ("movies",), ("watch_history",), HIDE, (STORE,), store_unavailable=True),
    Case(
        "store_unavailable_known_user",
        ALL_GRANTED,
        ("movies",),
        ("watch_history",),
        HIDE,
        (STORE,),
        store_unavailable=True,
    ),
    Case(
        "store_unavailable_default_granted", None, ("movies",), ("play_count",), HIDE, (STORE,), store_unavailable=True
    ),
    Case("store_unavailable_non_personalized", None, ("movies",), (), KEEP, store_unavailable=True),
    Case("store_unavailable_non_personalized_sensitive", None, ("gambling",), (), DISCREET, store_unavailable=True),
    Case("personalization_off", consented(personalization=False), ("movies",), ("watch_history",), HIDE, (OFF,)),
    Case(
        "personalization_off_default_granted",
        UserState(personalization=False),
        ("movies",),
        ("play_count",),
        HIDE,
        (OFF,),
    ),
    Case(
        "signal_off_hides_its_items",
        consented(signals={"location_precise": False}),
        ("movies",),
        ("location_precise",),
        HIDE,
        (SIGNAL_OFF,),
    ),
    Case(
        "signal_off_hides_items_using_it_among_others",
        consented(signals={"location_precise": False}),
        ("movies",),
        ("watch_history", "location_precise"),
        HIDE,
        (SIGNAL_OFF,),
    ),
    Case(
        "signal_off_leaves_other_signals",
        consented(signals={"location_precise": False}),
        ("movies",),
        ("watch_history",),
        KEEP,
    ),
    Case(
        "signal_explicitly_on",
        consented(signals={"location_precise": True}),
        ("movies",),
        ("location_precise",),
        DISCREET,
    ),
)
def test_minors_store_and_controls(case: Case) -> None:
    check(case)


# --- non-personalized items: only mutes and minor protection hide them ---------------------------


@table(
    Case("non_personalized_personalization_off", consented(personalization=False), ("movies",), (), KEEP),
    Case("non_personalized_anonymous", None, ("movies",), (), KEEP),
    Case("non_personalized_no_consent", ALL_DENIED, ("movies",), (), KEEP),
    Case(
        "non_personalized_tcf_denial",
        ALL_DENIED,
        ("movies",),
        (),
        KEEP,
        tcf=tc_string(personalization=False, sharing=False),
    ),
    Case("non_personalized_gpc", ALL_GRANTED, ("movies",), (), KEEP, gpc=True),
    Case("non_personalized_store_unavailable", ALL_GRANTED, ("movies",), (), KEEP, store_unavailable=True),
    Case(
        "non_personalized_every_signal_off",
        consented(signals=dict.fromkeys(COMPILED.signals, False)),
        ("movies",),
        (),
        KEEP,
    ),
    Case("non_personalized_no_categories", ALL_DENIED, (), (), KEEP),
    Case("non_personalized_muted", consented(muted={"movies": None}), ("movies",), (), HIDE, (MUTED,)),
    Case("non_personalized_muted_parent", consented(muted={"movies": None}), ("movies.horror",), (), HIDE, (MUTED,)),
    Case("non_personalized_muted_sensitive", UserState(muted={"gambling": None}), ("gambling",), (), HIDE, (MUTED,)),
    Case("non_personalized_sensitive_discreet", CONSENTED, ("gambling",), (), DISCREET),
    Case("non_personalized_sensitive_child_discreet", None, ("health.pregnancy",), (), DISCREET),
    Case("non_personalized_not_sensitive_child", None, ("health.fitness",), (), KEEP),
)
def test_non_personalized(case: Case) -> None:
    check(case)


# --- mutes and snoozes ----------------------------------------------------------------------------


@table(
    Case(
        "mute_parent_hides_child",
        consented(muted={"health": None}, sensitive={"health": True}),
        ("health.pregnancy",),
        ("watch_history",),
        HIDE,
        (MUTED,),
    ),
    Case(
        "mute_child_leaves_parent",
        consented(muted={"health.pregnancy": None}, sensitive={"health": True}),
        ("health",),
        ("watch_history",),
        DISCREET,
    ),
    Case(
        "mute_movies_hides_horror",
        consented(muted={"movies": None}),
        ("movies.horror",),
        ("watch_history",),
        HIDE,
        (MUTED,),
    ),
    Case("mute_horror_leaves_movies", consented(muted={"movies.horror": None}), ("movies",), ("watch_history",), KEEP),
    Case(
        "mute_is_not_a_name_prefix",
        consented(muted={"movies": None}),
        ("moviestar",),
        ("watch_history",),
        DISCREET,  # not muted; the policy does not define it, so it is shown discreetly
    ),
    Case(
        "mute_any_of_several_categories",
        consented(muted={"sports": None}),
        ("movies", "sports"),
        ("watch_history",),
        HIDE,
        (MUTED,),
    ),
    Case("mute_other_topic", consented(muted={"sports": None}), ("movies",), ("watch_history",), KEEP),
    Case("snooze_running", consented(muted={"sports": LATER}), ("sports",), ("watch_history",), HIDE, (MUTED,)),
    Case(
        "snooze_over",
        consented(muted={"sports": LATER}),
        ("sports",),
        ("watch_history",),
        KEEP,
        now=LATER + timedelta(seconds=1),
    ),
    Case(
        "snooze_ends_exactly_now",
        consented(muted={"sports": LATER}),
        ("sports",),
        ("watch_history",),
        KEEP,
        now=LATER,
    ),
    Case("snooze_over_non_personalized", UserState(muted={"sports": NOW}), ("sports",), (), KEEP, now=LATER),
)
def test_mutes(case: Case) -> None:
    check(case)


def test_muted_topic_is_the_muted_category() -> None:
    ctx = context(consented(muted={"health": None}))
    assert decide(ctx, ["health.pregnancy"], []).muted_topic == "health"
    assert decide(ctx, ["movies"], []).muted_topic is None


# --- sensitive categories -------------------------------------------------------------------------


@table(
    Case("sensitive_without_opt_in", CONSENTED, ("gambling",), ("watch_history",), HIDE, (SENSITIVE,)),
    Case(
        "sensitive_opt_in_false",
        consented(sensitive={"gambling": False}),
        ("gambling",),
        ("watch_history",),
        HIDE,
        (SENSITIVE,),
    ),
    Case(
        "sensitive_opted_in_is_discreet",
        consented(sensitive={"gambling": True}),
        ("gambling",),
        ("watch_history",),
        DISCREET,
    ),
    Case(
        "sensitive_opt_in_covers_child",
        consented(sensitive={"health": True}),
        ("health.pregnancy",),
        ("watch_history",),
        DISCREET,
    ),
    Case(
        "sensitive_child_opt_in_leaves_parent",
        consented(sensitive={"health.pregnancy": True}),
        ("health",),
        ("watch_history",),
        HIDE,
        (SENSITIVE,),
    ),
    Case("sensitive_child_without_opt_in", CONSENTED, ("health.pregnancy",), ("watch_history",), HIDE, (SENSITIVE,)),
    Case("sensitive_false_under_sensitive_parent", CONSENTED, ("health.fitness",), ("watch_history",), KEEP),
    Case(
        "sensitive_opt_in_for_other_topic",
        consented(sensitive={"dating": True}),
        ("gambling",),
        ("watch_history",),
        HIDE,
        (SENSITIVE,),
    ),
    Case(
        "two_sensitive_one_opt_in",
        consented(sensitive={"gambling": True}),
        ("gambling", "dating"),
        ("watch_history",),
        HIDE,
        (SENSITIVE,),
    ),
    Case(
        "two_sensitive_both_opted_in",
        consented(sensitive={"gambling": True, "dating": True}),
        ("gambling", "dating"),
        ("watch_history",),
        DISCREET,
    ),
    Case("sensitive_beside_plain_category", CONSENTED, ("movies", "gambling"), ("watch_history",), HIDE, (SENSITIVE,)),
    Case("unknown_child_of_sensitive", CONSENTED, ("gambling.poker",), ("watch_history",), HIDE, (SENSITIVE,)),
    Case(
        "opted_in_but_too_invasive",
        consented(sensitive={"health": True}),
        ("health",),
        ("location_precise",),
        HIDE,
        (INVASIVE,),
    ),
    Case(
        "missing_opt_in_and_too_invasive",
        CONSENTED,
        ("health",),
        ("location_precise",),
        HIDE,
        (SENSITIVE, INVASIVE),
    ),
)
def test_sensitive_categories(case: Case) -> None:
    check(case)


# --- category spellings and unknown categories (docs/architecture.md §2) ---------------------------------------

WITH_UNKNOWN = {rule: CompiledPolicy(make_policy(unknown_categories=rule)) for rule in ("discreet", "hide", "keep")}


@table(
    Case("spelling_leading_blank", CONSENTED, (" Gambling",), ("watch_history",), HIDE, (SENSITIVE,)),
    Case("spelling_uppercase", CONSENTED, ("GAMBLING",), ("watch_history",), HIDE, (SENSITIVE,)),
    Case(
        "spelling_fullwidth",
        CONSENTED,
        ("\uff47\uff41\uff4d\uff42\uff4c\uff49\uff4e\uff47",),
        ("watch_history",),
        HIDE,
        (SENSITIVE,),
    ),
    Case("spelling_child", CONSENTED, ("Health.Pregnancy\n",), ("watch_history",), HIDE, (SENSITIVE,)),
    Case(
        "spelling_opt_in_applies", consented(sensitive={"gambling": True}), ("Gambling",), ("watch_history",), DISCREET
    ),
    Case("spelling_muted", consented(muted={"sports": None}), ("SPORTS ",), (), HIDE, (MUTED,)),
    Case("spelling_known_child_not_unknown", CONSENTED, ("Movies.Thriller",), ("watch_history",), KEEP),
    Case("unknown_is_discreet", CONSENTED, ("crypto_casino",), ("watch_history",), DISCREET),
    Case("unknown_beside_known_is_discreet", CONSENTED, ("movies", "crypto_casino"), ("watch_history",), DISCREET),
    Case("unknown_non_personalized_is_discreet", None, ("crypto_casino",), (), DISCREET),
    Case("unknown_minor_non_personalized", None, ("crypto_casino",), (), HIDE, (MINOR,), minor=True),
    Case("unknown_other_reasons_decide", ALL_DENIED, ("crypto_casino",), ("watch_history",), HIDE, (NO_CONSENT,)),
    Case("unknown_lookalike_is_unknown", CONSENTED, ("g\u0430mbling",), ("watch_history",), DISCREET),
    Case("unknown_zero_width_is_unknown", CONSENTED, ("gambling\u200b",), ("watch_history",), DISCREET),
)
def test_category_spellings_and_unknown_categories(case: Case) -> None:
    check(case)


def test_an_unknown_category_is_flagged_on_the_decision_whatever_the_action() -> None:
    assert decide(context(), ["crypto_casino"], ["watch_history"]).unknown
    assert decide(context(), ["movies", "Crypto"], []).unknown
    assert not decide(context(), ["Movies.Thriller"], ["watch_history"]).unknown
    assert not decide(context(), [], ["watch_history"]).unknown


@pytest.mark.parametrize(
    ("rule", "minor", "action", "reasons"),
    [
        ("hide", False, HIDE, (UNKNOWN,)),
        ("hide", True, HIDE, (MINOR, UNKNOWN)),
        ("discreet", False, DISCREET, ()),
        ("keep", False, KEEP, ()),
        ("keep", True, KEEP, ()),  # non-personalized and, by the policy's word, harmless
    ],
)
def test_the_policy_decides_what_an_unknown_category_does(
    rule: str, minor: bool, action: Action, reasons: tuple[Reason, ...]
) -> None:
    for signals in ([], ["watch_history"]):
        ctx = context(CONSENTED, minor=minor, compiled=WITH_UNKNOWN[rule])
        decision = decide(ctx, ["crypto_casino"], signals)
        if minor and signals:
            assert decision.reasons[0] is MINOR  # personal data for a minor: hidden anyway
            continue
        assert (decision.action, decision.reasons) == (action, reasons)
        assert decision.unknown


def test_unknown_category_is_the_last_reason_to_decide() -> None:
    ctx = context(ALL_DENIED, compiled=WITH_UNKNOWN["hide"])
    decision = decide(ctx, ["crypto_casino"], ["watch_history"])
    assert decision.reasons == (NO_CONSENT, UNKNOWN)


# --- invasiveness ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("categories", "signals", "age", "inferred", "score", "action", "reasons"),
    [
        pytest.param(("movies",), ("play_count",), None, False, 0, KEEP, (), id="sensitivity_0"),
        pytest.param(("movies",), ("watch_history",), None, False, 10, KEEP, (), id="watch_history"),
        pytest.param(("movies",), ("partner_data",), None, False, 40, DISCREET, (), id="third_party"),
        pytest.param(("movies",), ("location_precise",), None, False, 30, DISCREET, (), id="location_precise"),
        pytest.param(
            ("movies",), ("watch_history", "location_precise"), None, False, 30, DISCREET, (), id="max_sensitivity"
        ),
        pytest.param(
            ("movies",), ("location_precise", "partner_data"), None, False, 50, DISCREET, (), id="max_plus_third_party"
        ),
        pytest.param(("movies",), ("watch_history",), 60, True, 45, DISCREET, (), id="fresh_inferred"),
        pytest.param(("movies",), ("watch_history",), 899, False, 30, DISCREET, (), id="fresh_just_in_time"),
        pytest.param(("movies",), ("watch_history",), 900, False, 10, KEEP, (), id="fresh_just_too_old"),
        pytest.param(("movies",), ("watch_history",), 0, False, 30, DISCREET, (), id="fresh_age_zero"),
        pytest.param(("movies",), ("watch_history",), None, True, 25, KEEP, (), id="inferred_only"),
        pytest.param(("movies",), ("location_precise",), 60, True, 65, DISCREET, (), id="location_fresh_inferred"),
        pytest.param(("movies",), ("partner_data",), 60, True, 75, HIDE, (INVASIVE,), id="third_party_fresh_inferred"),
        pytest.param(("health",), ("watch_history",), None, False, 60, DISCREET, (), id="sensitive_watch_history"),
        pytest.param(("health",), ("location_precise",), None, False, 80, HIDE, (INVASIVE,), id="sensitive_location"),
        pytest.param(("health",), ("watch_history",), 60, False, 80, HIDE, (INVASIVE,), id="sensitive_fresh"),
        pytest.param(("gambling",), ("partner_data",), 60, True, 100, HIDE, (INVASIVE,), id="capped_at_100"),
        pytest.param(
            ("health", "gambling"), ("play_count",), None, False, 50, DISCREET, (), id="sensitive_counts_once"
        ),
        pytest.param(("gambling",), (), 60, True, 0, DISCREET, (), id="non_personalized_scores_0"),
        pytest.param(("movies",), (), 60, True, 0, KEEP, (), id="non_personalized_plain"),
    ],
)
def test_invasiveness_score(
    categories: tuple[str, ...],
    signals: tuple[str, ...],
    age: float | None,
    inferred: bool,
    score: int,
    action: Action,
    reasons: tuple[Reason, ...],
) -> None:
    decision = decide(context(OPEN), categories, signals, age, inferred)
    assert (decision.score, decision.action, decision.reasons) == (score, action, reasons)


def invasiveness_policy(*, weights: Mapping[str, int] | None = None, **thresholds: int) -> Policy:
    invasiveness = copy.deepcopy(BASE_POLICY["invasiveness"])
    invasiveness["weights"].update(weights or {})
    invasiveness.update(thresholds)
    return make_policy(invasiveness=invasiveness)


@pytest.mark.parametrize(
    ("policy_variant", "score", "action", "reasons"),
    [
        pytest.param(invasiveness_policy(weights={"signal_sensitivity": 29}), 29, KEEP, (), id="score_29_keep"),
        pytest.param(invasiveness_policy(weights={"signal_sensitivity": 30}), 30, DISCREET, (), id="score_30_discreet"),
        pytest.param(invasiveness_policy(weights={"signal_sensitivity": 69}), 69, DISCREET, (), id="score_69_discreet"),
        pytest.param(
            invasiveness_policy(weights={"signal_sensitivity": 70}), 70, HIDE, (INVASIVE,), id="score_70_hide"
        ),
        pytest.param(invasiveness_policy(discreet_at=11), 10, KEEP, (), id="discreet_at_above_score"),
        pytest.param(invasiveness_policy(discreet_at=10), 10, DISCREET, (), id="discreet_at_equal_score"),
        pytest.param(invasiveness_policy(discreet_at=11, hide_at=11), 10, KEEP, (), id="hide_at_above_score"),
        pytest.param(invasiveness_policy(discreet_at=10, hide_at=10), 10, HIDE, (INVASIVE,), id="hide_at_equal_score"),
        pytest.param(invasiveness_policy(hide_at=101), 10, KEEP, (), id="hide_at_101_never_hides"),
    ],
)
def test_invasiveness_thresholds(
    policy_variant: Policy, score: int, action: Action, reasons: tuple[Reason, ...]
) -> None:
    ctx = context(OPEN, compiled=CompiledPolicy(policy_variant))
    decision = decide(ctx, ["movies"], ["watch_history"])
    assert (decision.score, decision.action, decision.reasons) == (score, action, reasons)


def test_freshness_window_comes_from_the_policy() -> None:
    invasiveness = copy.deepcopy(BASE_POLICY["invasiveness"])
    invasiveness["fresh_activity_seconds"] = 60
    ctx = context(OPEN, compiled=CompiledPolicy(make_policy(invasiveness=invasiveness)))
    assert decide(ctx, ["movies"], ["watch_history"], 59).score == 30
    assert decide(ctx, ["movies"], ["watch_history"], 60).score == 10


# --- explanations ---------------------------------------------------------------------------------

SIGNAL_LABELS = [text for signal in COMPILED.policy.signals.values() for text in signal.label.values()]
CATEGORY_LABELS = [text for category in COMPILED.policy.categories.values() for text in category.label.values()]
ALL_LABELS = sorted({text.lower() for text in SIGNAL_LABELS + CATEGORY_LABELS})


def test_kept_item_explains_the_signals_it_used(policy: Policy) -> None:
    decision = decide(context(compiled=CompiledPolicy(policy)), ["movies"], ["watch_history"])
    assert decision.action is KEEP
    assert decision.explanation == {
        "text": "You see this because of what you watched.",
        "because": ["watch_history"],
        "controls": "/guardrail/controls",
    }


def test_explanation_names_every_signal_once() -> None:
    decision = decide(context(), ["movies"], ["watch_history", "search_history", "watch_history"])
    assert decision.explanation is not None
    assert decision.explanation["text"] == "You see this because of what you watched and what you searched for."
    assert decision.explanation["because"] == ["watch_history", "search_history"]


def test_inferred_interest_says_so() -> None:
    decision = decide(context(), ["movies"], ["watch_history"], inferred=True)
    assert decision.action is KEEP
    assert decision.explanation is not None
    assert decision.explanation["text"] == "We think you may like this because of what you watched."
    assert decision.explanation["because"] == ["watch_history"]


@pytest.mark.parametrize(
    ("state", "categories", "signals", "gpc"),
    [
        pytest.param(CONSENTED, ("movies",), ("location_precise",), False, id="invasive_signal"),
        pytest.param(OPEN, ("health.pregnancy",), ("watch_history",), False, id="sensitive_opted_in"),
        pytest.param(OPEN, ("gambling", "movies.horror"), ("search_history", "watch_history"), False, id="many"),
        pytest.param(OPEN, ("dating",), ("watch_history",), True, id="with_gpc"),
    ],
)
def test_discreet_explanation_names_nothing(
    state: UserState, categories: tuple[str, ...], signals: tuple[str, ...], gpc: bool
) -> None:
    decision = decide(context(state, gpc=gpc), categories, signals)
    assert decision.action is DISCREET
    assert decision.explanation is not None
    assert decision.explanation["because"] == []
    text = decision.explanation["text"].lower()
    assert text.startswith("you see this because of how you use this service.")
    assert [name for name in ALL_LABELS if name in text] == []
    assert [name for name in (*categories, *signals) if name in text] == []


@pytest.mark.parametrize("categories", [("movies",), ("gambling",), ()], ids=["plain", "sensitive", "uncategorized"])
def test_non_personalized_explanation(categories: tuple[str, ...]) -> None:
    decision = decide(context(None), categories, [])
    assert decision.explanation == {
        "text": "Popular with many people right now.",
        "because": [],
        "controls": "/guardrail/controls",
    }


def test_gpc_is_mentioned_on_personalized_items() -> None:
    decision = decide(context(ALL_GRANTED, gpc=True), ["movies"], ["watch_history"])
    assert decision.action is KEEP
    assert decision.explanation is not None
    gpc_sentence = message("en", "item.gpc")
    assert decision.explanation["text"] == f"You see this because of what you watched. {gpc_sentence}"
    assert "browser" in gpc_sentence
    assert "privacy signal" in gpc_sentence


def test_gpc_is_not_mentioned_on_non_personalized_items() -> None:
    decision = decide(context(ALL_GRANTED, gpc=True), ["movies"], [])
    assert decision.explanation is not None
    assert decision.explanation["text"] == "Popular with many people right now."


def test_hidden_items_have_no_explanation() -> None:
    assert decide(context(None), ["movies"], ["watch_history"]).explanation is None


@pytest.mark.parametrize(
    ("state", "categories", "signals", "inferred", "text"),
    [
        pytest.param(
            CONSENTED,
            ("movies",),
            ("watch_history",),
            False,
            "what you watched (ko) 기반으로 추천했어요.",
            id="because",
        ),
        pytest.param(
            CONSENTED,
            ("movies",),
            ("watch_history", "search_history"),
            False,
            "what you watched (ko), what you searched for (ko) 기반으로 추천했어요.",
            id="because_two",
        ),
        pytest.param(
            CONSENTED,
            ("movies",),
            ("watch_history",),
            True,
            "what you watched (ko) 기반으로 좋아하실 것 같아 추천했어요.",
            id="inferred",
        ),
        pytest.param(
            OPEN, ("health",), ("watch_history",), False, "이 서비스 이용 방식을 바탕으로 추천했어요.", id="discreet"
        ),
        pytest.param(None, ("movies",), (), False, "지금 많은 사람이 보고 있어요.", id="popular"),
    ],
)
def test_korean_explanations(
    state: UserState | None, categories: tuple[str, ...], signals: tuple[str, ...], inferred: bool, text: str
) -> None:
    decision = decide(context(state, locale="ko"), categories, signals, inferred=inferred)
    assert decision.explanation is not None
    assert decision.explanation["text"] == text


def test_same_shape_shares_one_decision() -> None:
    ctx = context()
    first = decide(ctx, ["movies"], ["watch_history"], 5000)
    assert decide(ctx, ["movies"], ["watch_history"], 6000) is first
    assert decide(ctx, ("movies",), ("watch_history",), None) is first
    fresh = decide(ctx, ["movies"], ["watch_history"], 10)
    assert decide(ctx, ["movies"], ["watch_history"], 20) is fresh


@pytest.mark.parametrize(
    ("age", "inferred", "score", "text"),
    [
        pytest.param(None, False, 10, "You see this because of what you watched.", id="stale_declared"),
        pytest.param(10, False, 30, "You see this because of how you use this service.", id="fresh_declared"),
        pytest.param(None, True, 25, "We think you may like this because of what you watched.", id="stale_inferred"),
        pytest.param(10, True, 45, "You see this because of how you use this service.", id="fresh_inferred"),
    ],
)
def test_memo_key_includes_freshness_and_inference(age: float | None, inferred: bool, score: int, text: str) -> None:
    ctx = context()
    # Warm the memo with the other shapes first: none of them may answer for this one.
    for other_age in (None, 10):
        for other_inferred in (False, True):
            decide(ctx, ["movies"], ["watch_history"], other_age, other_inferred)
    decision = decide(ctx, ["movies"], ["watch_history"], age, inferred)
    assert decision.score == score
    assert decision.explanation is not None
    assert decision.explanation["text"] == text


# --- property: turning a control off never un-hides an item --------------------------------------

GRID_CATEGORIES: tuple[tuple[str, ...], ...] = (
    (),
    ("movies",),
    ("movies.horror",),
    ("sports",),
    ("gambling",),
    ("health",),
    ("health.pregnancy",),
    ("health.fitness",),
    ("dating", "movies"),
)
GRID_SIGNALS: tuple[tuple[str, ...], ...] = (
    (),
    ("watch_history",),
    ("search_history",),
    ("location_precise",),
    ("partner_data",),
    ("shared_segments",),
    ("play_count",),
    ("watch_history", "location_precise"),
    ("watch_history", "mind_reading"),
)
GRID = [
    (categories, signals, age, inferred)
    for categories in GRID_CATEGORIES
    for signals in GRID_SIGNALS
    for age in (None, 60.0)
    for inferred in (False, True)
]


def single_changes(state: UserState) -> list[tuple[str, dict[str, Any]]]:
    """Every single control a user can turn off from this state, as the merge patch they would send."""
    changes: list[tuple[str, dict[str, Any]]] = [("personalization off", {"personalization": False})]
    changes += [(f"signal {name} off", {"signals": {name: False}}) for name in COMPILED.signals]
    changes += [(f"mute {name}", {"muted": {name: {"until": None}}}) for name in COMPILED.policy.categories]
    changes += [
        (f"snooze {name}", {"muted": {name: {"until": "2026-11-27T00:00:00Z"}}}) for name in ("sports", "health")
    ]
    for name, on in state.sensitive.items():
        if on:
            changes += [(f"remove opt-in {name}", {"sensitive": {name: None}})]
            changes += [(f"opt-in {name} false", {"sensitive": {name: False}})]
    for purpose, value in state.consent.items():
        if value == "granted":
            changes += [(f"revoke {purpose}", {"consent": {purpose: "denied"}})]
            changes += [(f"forget {purpose}", {"consent": {purpose: None}})]
    return changes


BASE_STATES = {
    "open": OPEN,
    "partial": UserState(
        consent={"personalization": "granted", "sharing": "granted"},
        sensitive={"health": True},
        muted={"movies.horror": None},
        signals={"location_precise": True},
    ),
    "defaults": NO_CONTROLS,
}
REQUESTS = {
    "plain": RequestSignals(),
    "gpc": RequestSignals(gpc=True),
    "tcf": RequestSignals(tcf=tc_string(personalization=True, measurement=False)),
}


@pytest.mark.parametrize("request_name", REQUESTS)
@pytest.mark.parametrize("state_name", BASE_STATES)
def test_turning_a_control_off_never_reveals_an_item(state_name: str, request_name: str) -> None:
    policy = COMPILED.policy
    state, request = BASE_STATES[state_name], REQUESTS[request_name]

    def decisions(user: UserState) -> list[ItemDecision]:
        ctx = UserContext(COMPILED, user, request, locale="en", now=NOW)
        return [decide(ctx, *item) for item in GRID]

    before = decisions(state)
    assert any(d.hidden for d in before)
    assert any(not d.hidden for d in before)
    broken: list[str] = []
    for change, body in single_changes(state):
        after = decisions(validate_patch(policy, body, NOW).apply(state, NOW))
        for item, old, new in zip(GRID, before, after, strict=True):
            if (old.hidden and not new.hidden) or not set(old.reasons) <= set(new.reasons):
                broken.append(f"{change}: {item} {old.action}{list(old.reasons)} -> {new.action}{list(new.reasons)}")
    assert broken == []


def test_the_grid_has_something_for_every_control_to_hide() -> None:
    """The property above is only worth something if each change can hide an item that was shown."""
    ctx_before = UserContext(COMPILED, OPEN, RequestSignals(), locale="en", now=NOW)
    shown = [item for item in GRID if not decide(ctx_before, *item).hidden]
    for change, body in single_changes(OPEN):
        state = validate_patch(COMPILED.policy, body, NOW).apply(OPEN, NOW)
        ctx = UserContext(COMPILED, state, RequestSignals(), locale="en", now=NOW)
        newly_hidden = [item for item in shown if decide(ctx, *item).hidden]
        # Forgetting a grant of a purpose whose default is "granted" changes nothing, rightly.
        assert bool(newly_hidden) is (change != "forget measurement"), change
