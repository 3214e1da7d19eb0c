"""`GuardrailContext`: the header the guardrail writes reads back as the same facts, and anything else reads
as "not personalized", so a recommender that cannot tell what is allowed serves what everyone gets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from guardrail.context_header import GuardrailContext, parse_guardrail_context

# Policy ids are printable ASCII; quotes and backslashes are escaped in the header.
NAMES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)


@given(
    st.lists(NAMES, unique=True, max_size=5),
    st.lists(NAMES, unique=True, max_size=5),
    st.one_of(st.none(), NAMES),
)
def test_the_header_reads_back_as_the_same_facts(signals: list[str], exclude: list[str], locale: str | None) -> None:
    facts = GuardrailContext(True, tuple(sorted(signals)), tuple(sorted(exclude)), locale)
    assert parse_guardrail_context(facts.header()) == facts
    assert parse_guardrail_context(facts.header().decode()) == facts


def test_not_personalized_says_nothing_else() -> None:
    assert GuardrailContext(False, ("watch_history",), ("dating",), "en").header() == b"personalized=?0"
    assert parse_guardrail_context(b"personalized=?0") == GuardrailContext(False)


def test_a_missing_or_unreadable_header_is_not_personalized() -> None:
    for value in [None, b"", b"personalized", b"personalized=?1; x", b'signals=("a")', b"personalized=?1,,", "é"]:
        assert parse_guardrail_context(value).personalized is False, value


def test_exclude_covers_the_categories_under_it() -> None:
    facts = GuardrailContext(True, (), ("health", "gambling.poker"), "en")
    assert facts.excludes("health") and facts.excludes("health.pregnancy")
    assert facts.excludes("gambling.poker") and not facts.excludes("gambling")
    assert not facts.excludes("healthy")
