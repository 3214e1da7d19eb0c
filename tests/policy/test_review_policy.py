"""The policy's `review:` section, `category_aliases` and `blocked_items` (docs/review.md)."""

from __future__ import annotations

from typing import Any

import pytest

from guardrail.errors import PolicyError
from tests.conftest import make_policy


def problems(**overrides: Any) -> str:
    with pytest.raises(PolicyError) as caught:
        make_policy(**overrides)
    return str(caught.value)


def test_reviewers_by_id_and_a_flag_threshold() -> None:
    policy = make_policy(review={"reviewers": ["staff-1"], "invasiveness_at": 60})
    assert policy.review is not None
    assert policy.review.reviewers == ["staff-1"] and policy.review.invasiveness_at == 60
    assert policy.review.max_entries == 1000
    assert make_policy().review is None  # nobody reviews unless the policy says who


def test_a_review_section_names_someone() -> None:
    assert "name at least one reviewer" in problems(review={"invasiveness_at": 60})


def test_a_role_needs_its_claim_and_a_signed_token() -> None:
    assert "role_claim and role go together" in problems(review={"role": "reviewer"})
    found = problems(review={"role_claim": "roles", "role": "reviewer"})
    assert "review.role_claim" in found and "identity.source: jwt" in found


def test_a_reviewer_id_is_taken_exactly() -> None:
    assert "cannot be a user id" in problems(review={"reviewers": [" staff-1"]})


def test_the_flag_threshold_is_below_hide_at() -> None:
    found = problems(review={"reviewers": ["staff-1"], "invasiveness_at": 80})
    assert "review.invasiveness_at" in found and "below hide_at" in found


def test_an_alias_names_an_undefined_category_and_reads_as_a_defined_one() -> None:
    assert make_policy(category_aliases={"sportsbook": "gambling"}).category_aliases == {"sportsbook": "gambling"}
    assert "is a defined category" in problems(category_aliases={"gambling": "movies"})
    assert "unknown category 'nowhere'" in problems(category_aliases={"sportsbook": "nowhere"})


def test_an_alias_is_written_as_categories_are_matched() -> None:
    found = problems(category_aliases={" Sportsbook": "gambling"})
    assert "would never match" in found and "'sportsbook'" in found
