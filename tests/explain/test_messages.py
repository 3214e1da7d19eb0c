"""Message catalogs and the sentences built from them: complete in every locale, plain, and discreet."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

import pytest

from guardrail.engine import Action, ItemDecision, Reason, UserContext, decide
from guardrail.explain.render import Notices, receipt_text
from guardrail.messages import CATALOGS, SOURCE_LOCALE, Message, message, missing_messages
from guardrail.state import UserState
from tests.engine.support import COMPILED, context
from tests.explain.readability import flesch_reading_ease

ENGLISH = CATALOGS["en"]
OTHER_LOCALES = sorted(set(CATALOGS) - {"en"})
PLURAL_CATEGORIES = {"zero", "one", "two", "few", "many", "other"}
# Realistic values for every placeholder the catalogs use.
EXAMPLE_PARAMS = {
    "signals": "what you watched",
    "topic": "gambling",
    "until": "2026-12-13 09:00 UTC",
    "item": "m42",
    "seconds": 30,
    "days": 30,
    "signal": "what you watched",
    "when": "2026-12-06 09:00 UTC",
    # The review page (docs/review.md).
    "count": 12,
    "first": "2026-12-01 09:00 UTC",
    "last": "2026-12-03 18:00 UTC",
    "language": "English",
    "reviewer": "staff-1",
    "decision": "block",
    "note": "abusive",
}


def placeholders(entry: Message) -> set[str]:
    texts = [entry] if isinstance(entry, str) else list(entry.values())
    return {name for text in texts for _, name, _, _ in string.Formatter().parse(text) if name}


def hidden(ctx: UserContext, *items: tuple[Sequence[str], Sequence[str]]) -> list[ItemDecision]:
    decisions = [decide(ctx, categories, signals) for categories, signals in items]
    assert all(decision.hidden for decision in decisions)
    return decisions


# --- completeness -----------------------------------------------------------------------------------


def test_shipped_locales() -> None:
    assert {"en", "ko"} <= set(CATALOGS)
    assert SOURCE_LOCALE == "en"


def test_no_locale_misses_a_message() -> None:
    assert missing_messages(CATALOGS) == {}


def test_missing_messages_reports_gaps() -> None:
    # The check the policy loader relies on must be able to fail.
    assert missing_messages(["xx"]) == {"xx": list(ENGLISH)}


@pytest.mark.parametrize("locale", OTHER_LOCALES)
@pytest.mark.parametrize("key", list(ENGLISH))
def test_message_exists_with_the_same_placeholders(locale: str, key: str) -> None:
    catalog = CATALOGS[locale]
    assert key in catalog
    assert placeholders(catalog[key]) == placeholders(ENGLISH[key])


@pytest.mark.parametrize("locale", OTHER_LOCALES)
def test_no_locale_has_messages_english_lacks(locale: str) -> None:
    assert sorted(set(CATALOGS[locale]) - set(ENGLISH)) == []


@pytest.mark.parametrize("locale", sorted(CATALOGS))
def test_plural_forms_are_cldr_categories_with_other(locale: str) -> None:
    for key, entry in CATALOGS[locale].items():
        if isinstance(entry, Mapping):
            assert "other" in entry, key
            assert set(entry) <= PLURAL_CATEGORIES, key


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize("locale", sorted(CATALOGS))
def test_every_reason_has_a_receipt_text(locale: str, reason: Reason) -> None:
    assert f"reason.{reason}" in CATALOGS[locale]


# --- plain language ---------------------------------------------------------------------------------


def english_texts() -> list[object]:
    """Every English message rendered as users see it; plural messages once per form."""
    cases: list[object] = []
    for key, entry in ENGLISH.items():
        counts = (1, 3) if isinstance(entry, Mapping) else (None,)
        for count in counts:
            params = dict(EXAMPLE_PARAMS, n=count) if count is not None else EXAMPLE_PARAMS
            text = message("en", key, **params)
            cases.append(pytest.param(text, id=key if count is None else f"{key}[n={count}]"))
    return cases


@pytest.mark.parametrize("text", english_texts())
def test_english_is_short(text: str) -> None:
    assert "{" not in text
    assert len(text.split()) <= 25


@pytest.mark.parametrize("text", english_texts())
def test_english_is_easy_to_read(text: str) -> None:
    # Flesch's formula measures sentences; on a heading of one to four words (the page's "Topics",
    # "Language") it only counts syllables, so headings and labels are held to the length rule above.
    if len(text.split()) < 5:
        assert len(text) <= 40, text
        return
    assert flesch_reading_ease(text) >= 60, text


def test_plural_forms() -> None:
    assert message("en", "notice.topic_muted", n=1, topic="sports") == "We hid 1 suggestion because you muted sports."
    assert message("en", "notice.topic_muted", n=2, topic="sports") == "We hid 2 suggestions because you muted sports."
    assert message("en", "notice.topic_muted", n=0, topic="sports") == "We hid 0 suggestions because you muted sports."


def notice(ctx: UserContext, hidden: list[ItemDecision]) -> str | None:
    """The notice a page with these hidden decisions gets, as the guard writes it for the context's locale."""
    return Notices(ctx.compiled)(ctx.locale, hidden)


# --- notices ----------------------------------------------------------------------------------------


def test_nothing_hidden_no_notice() -> None:
    assert notice(context(), []) is None


def test_muted_topic_is_named() -> None:
    ctx = context(UserState(consent={"personalization": "granted"}, muted={"sports": None}))
    decisions = hidden(ctx, (["sports"], ["watch_history"]), (["sports", "movies"], []))
    assert notice(ctx, decisions) == "We hid 2 suggestions because you muted sports."


def test_one_hidden_item_is_singular() -> None:
    ctx = context(UserState(consent={"personalization": "granted"}, muted={"sports": None}))
    assert notice(ctx, hidden(ctx, (["sports"], ["watch_history"]))) == "We hid 1 suggestion because you muted sports."


def test_muted_child_topic_is_named_by_the_muted_category() -> None:
    ctx = context(UserState(consent={"personalization": "granted"}, muted={"movies": None}))
    decisions = hidden(ctx, (["movies.horror"], ["watch_history"]))
    assert notice(ctx, decisions) == "We hid 1 suggestion because you muted movies."


def test_korean_muted_topic() -> None:
    ctx = context(UserState(consent={"personalization": "granted"}, muted={"sports": None}), locale="ko")
    decisions = hidden(ctx, (["sports"], ["watch_history"]), (["sports"], []))
    assert notice(ctx, decisions) == "sports (ko) 주제를 숨기기로 하셔서 추천 2개를 숨겼어요."


def test_several_muted_topics() -> None:
    ctx = context(UserState(consent={"personalization": "granted"}, muted={"sports": None, "movies": None}))
    decisions = hidden(ctx, (["sports"], ["watch_history"]), (["movies"], []))
    assert notice(ctx, decisions) == "We hid 2 suggestions because of topics you muted."


SENSITIVE_LABELS = [
    label.lower()
    for name in COMPILED.sensitive_categories
    for label in (name, *COMPILED.policy.categories[name].label.values())
] + ["pregnancy"]


@pytest.mark.parametrize(
    ("muted", "items"),
    [
        pytest.param({"gambling": None}, ((["gambling"], ["watch_history"]), (["gambling"], [])), id="gambling"),
        pytest.param({"health": None}, ((["health.pregnancy"], ["watch_history"]),), id="child_of_health"),
        pytest.param({"health.pregnancy": None}, ((["health.pregnancy"], []),), id="health_pregnancy"),
        pytest.param(
            {"gambling": None, "sports": None}, ((["gambling"], []), (["sports"], [])), id="sensitive_and_plain"
        ),
    ],
)
def test_muted_sensitive_topic_is_discreet(
    muted: dict[str, None], items: tuple[tuple[list[str], list[str]], ...]
) -> None:
    ctx = context(UserState(consent={"personalization": "granted"}, muted=muted))
    decisions = hidden(ctx, *items)
    text = notice(ctx, decisions)
    n = len(items)
    assert text == f"We hid {n} suggestion{'s' if n > 1 else ''} to keep your private topics private."
    assert [label for label in SENSITIVE_LABELS if label in text.lower()] == []


def test_sensitive_opt_in_notice_names_no_category() -> None:
    ctx = context()
    decisions = hidden(ctx, (["gambling"], ["watch_history"]), (["health.pregnancy"], ["watch_history"]))
    assert [d.reasons for d in decisions] == [(Reason.SENSITIVE_NEEDS_OPT_IN,)] * 2
    text = notice(ctx, decisions)
    assert text == "We hid 2 suggestions to keep your private topics private."
    assert [label for label in SENSITIVE_LABELS if label in text.lower()] == []


def test_mixed_reasons() -> None:
    ctx = context(
        UserState(consent={"personalization": "granted"}, muted={"sports": None}, signals={"location_precise": False})
    )
    decisions = hidden(
        ctx, (["sports"], ["watch_history"]), (["movies"], ["location_precise"]), (["gambling"], ["watch_history"])
    )
    assert notice(ctx, decisions) == "We hid 3 suggestions. Your controls show why."


def test_mixed_reasons_with_gpc_mention_the_browser_signal() -> None:
    ctx = context(UserState(consent={"personalization": "granted"}, muted={"sports": None}), gpc=True)
    decisions = hidden(ctx, (["sports"], ["watch_history"]), (["movies"], ["partner_data"]))
    gpc_sentence = message("en", "item.gpc")
    assert notice(ctx, decisions) == f"We hid 2 suggestions. Your controls show why. {gpc_sentence}"
    assert "browser" in gpc_sentence


def test_gpc_notice_says_the_browser_signal_was_honoured() -> None:
    ctx = context(UserState(consent={"personalization": "granted", "sharing": "granted"}), gpc=True)
    decisions = hidden(ctx, (["movies"], ["partner_data"]), (["sports"], ["shared_segments"]))
    text = notice(ctx, decisions)
    assert text == "We hid 2 suggestions because your browser asked us not to share your data. We honoured it."


@pytest.mark.parametrize(
    ("ctx", "signals", "reason"),
    [
        pytest.param(
            context(UserState(personalization=False, consent={"personalization": "granted"})),
            ["watch_history"],
            Reason.PERSONALIZATION_OFF,
            id="personalization_off",
        ),
        pytest.param(
            context(UserState(consent={"personalization": "granted"}, signals={"watch_history": False})),
            ["watch_history"],
            Reason.SIGNAL_OFF,
            id="signal_off",
        ),
        pytest.param(context(None), ["watch_history"], Reason.NO_CONSENT, id="no_consent"),
        pytest.param(
            context(tcf=frozenset({("personalization", False)})),
            ["watch_history"],
            Reason.TCF_NO_CONSENT,
            id="tcf_no_consent",
        ),
        pytest.param(context(minor=True), ["watch_history"], Reason.MINOR_PROTECTION, id="minor_protection"),
        pytest.param(
            context(store_unavailable=True), ["watch_history"], Reason.STORE_UNAVAILABLE, id="store_unavailable"
        ),
        pytest.param(context(), ["partner_data"], Reason.TOO_INVASIVE, id="too_invasive"),
    ],
)
def test_single_reason_notice_names_the_rule(ctx: UserContext, signals: list[str], reason: Reason) -> None:
    decision = decide(ctx, ["movies"], signals, 10, True)
    assert decision.reasons[0] is reason
    assert notice(ctx, [decision]) == message("en", f"notice.{reason}", n=1)
    assert notice(ctx, [decision, decision]) == message("en", f"notice.{reason}", n=2)


def test_single_reason_notice_in_plain_words() -> None:
    ctx = context(UserState(personalization=False, consent={"personalization": "granted"}))
    decisions = hidden(ctx, (["movies"], ["watch_history"]), (["sports"], ["play_count"]))
    assert notice(ctx, decisions) == "We hid 2 suggestions because you turned off personal picks."


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize("locale", sorted(CATALOGS))
def test_every_reason_has_a_notice(locale: str, reason: Reason) -> None:
    decision = ItemDecision(Action.HIDE, (reason,), 0, ("watch_history",), None, muted_topic="sports")
    text = notice(context(locale=locale), [decision, decision])
    assert text
    assert "2" in text


# --- receipts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "reasons", "because", "text"),
    [
        pytest.param(
            "en",
            ["signal_off", "sensitive_needs_opt_in"],
            ["location_precise"],
            "Hidden because it used data you turned off.",
            id="first_reason_decides",
        ),
        pytest.param(
            "en",
            [Reason.GPC_OPT_OUT],
            ["partner_data"],
            "Hidden because your browser asked us not to share your data.",
            id="reason_enum",
        ),
        pytest.param(
            "en",
            [],
            ["watch_history", "location_precise"],
            "You see this because of what you watched and your exact location.",
            id="kept",
        ),
        pytest.param("en", [], [], "Popular with many people right now.", id="kept_non_personalized"),
        pytest.param(
            "ko", ["no_consent"], ["watch_history"], "맞춤 추천에 동의하지 않으셔서 숨겼어요.", id="ko_hidden"
        ),
        pytest.param("ko", [], ["watch_history"], "what you watched (ko) 기반으로 추천했어요.", id="ko_kept"),
    ],
)
def test_receipt_text(locale: str, reasons: list[str], because: list[str], text: str) -> None:
    assert receipt_text(COMPILED, locale, reasons, because) == text


def test_receipt_for_engine_decisions() -> None:
    ctx = context(UserState(consent={"personalization": "granted"}, muted={"sports": None}))
    shown = decide(ctx, ["movies"], ["watch_history"])
    muted = decide(ctx, ["sports"], ["watch_history"])
    assert receipt_text(COMPILED, "en", shown.reasons, shown.because) == "You see this because of what you watched."
    assert muted.reasons == (Reason.TOPIC_MUTED,)
    assert receipt_text(COMPILED, "en", muted.reasons, muted.because) == message("en", "reason.topic_muted")


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize("locale", sorted(CATALOGS))
def test_hidden_receipt_names_the_deciding_reason(locale: str, reason: Reason) -> None:
    # A later reason must not change the sentence: the first one decided.
    text = receipt_text(COMPILED, locale, [reason, Reason.TOO_INVASIVE], ["watch_history"])
    assert text == message(locale, f"reason.{reason}")
    assert "{" not in text
