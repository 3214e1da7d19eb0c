"""Hypothesis strategies drawn from realistic vocabularies: the demo policy, the test policy, and
policies built from IAB Content Taxonomy 3.1 categories; user states, request signals and items to match.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from guardrail.engine import RequestSignals
from guardrail.engine.compiled import is_sensitive_category
from guardrail.policy.loading import load_policy, policy_from_mapping
from guardrail.policy.models import Policy
from guardrail.state import UserState
from tests.conftest import ROOT, label, make_policy
from tests.engine.support import NOW

IAB_FILE = ROOT / "tests" / "data" / "iab" / "content-taxonomy-3.1.tsv"  # CC BY 3.0, credited in its README.md

DEMO_POLICY = load_policy(ROOT / "config" / "guardrail.yaml")
TEST_POLICY = make_policy()


EXPLORE_FACTOR = 25


def examples(count: int) -> settings:
    """`count` examples: few enough for the normal suite; HYPOTHESIS_PROFILE=explore runs 25 times as many."""
    factor = EXPLORE_FACTOR if settings.get_current_profile_name() == "explore" else 1
    return settings(max_examples=count * factor)


@dataclass(frozen=True)
class IabCategory:
    id: str  # `food_drink` or `food_drink.cooking`: the way the demo policy names IAB categories
    name: str  # its name in the taxonomy
    special: bool  # the taxonomy marks it special category data (SCD)


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _iab_categories() -> list[IabCategory]:
    """Tier 1 and tier 2 of the taxonomy, as policy category ids."""
    found: dict[str, IabCategory] = {}
    with IAB_FILE.open(encoding="utf-8", newline="") as file:
        for row in list(csv.reader(file, delimiter="\t"))[2:]:
            tier1, tier2, tier3 = row[3], row[4], row[5]
            if tier3 or not tier1:
                continue
            ident = _snake(tier1) + (f".{_snake(tier2)}" if tier2 else "")
            found.setdefault(ident, IabCategory(ident, row[2], row[7] == "SCD"))
    return list(found.values())


IAB = _iab_categories()
IAB_TOP = [c for c in IAB if "." not in c.id]
# Signal and purpose names from the shipped and test policies.
SIGNAL_NAMES = sorted({*DEMO_POLICY.signals, *TEST_POLICY.signals})
PURPOSE_NAMES = sorted({*DEMO_POLICY.purposes, *TEST_POLICY.purposes})
# What upstreams send that no policy names: an unknown signal, IAB categories the policy may lack,
# and an unknown sub-category of a category that may be sensitive.
UNKNOWN_SIGNALS = ["telepathy", "ad_id"]
EXTRA_CATEGORIES = ["gambling", "health.unknown_child", "sensitive_topics", "news.local"]
# Labels no policy here defines, some of them spelled like ones that are, and one that is empty.
UNKNOWN_CATEGORIES = ["crypto_casino", "Crypto Casino ", "g\u0430mbling", "gambling\u200b", ""]


@st.composite
def generated_policies(draw: st.DrawFn) -> Policy:
    """A valid policy: some IAB categories (sensitive where the taxonomy says SCD, and some others),
    purposes and signals from the shipped vocabulary with random flags, random weights and thresholds."""
    tops = draw(st.lists(st.sampled_from(IAB_TOP), min_size=1, max_size=6, unique=True))
    top_ids = {c.id for c in tops}
    children = [c for c in IAB if "." in c.id and c.id.split(".")[0] in top_ids]
    chosen = tops + draw(st.lists(st.sampled_from(children), max_size=8, unique=True) if children else st.just([]))
    categories: dict[str, Any] = {}
    for category in chosen:
        sensitive = True if category.special else draw(st.sampled_from([None, None, False, True]))
        categories[category.id] = {"label": label(category.name.lower()[:70])}
        if sensitive is not None:
            categories[category.id]["sensitive"] = sensitive

    purpose_names = draw(st.lists(st.sampled_from(PURPOSE_NAMES), min_size=1, max_size=3, unique=True))
    purposes = {
        name: {
            "default": draw(st.sampled_from(["granted", "denied"])),
            "follows_gpc": draw(st.booleans()),
            "tcf_purposes": draw(st.lists(st.integers(1, 10), max_size=3, unique=True)),
        }
        for name in purpose_names
    }
    signal_names = draw(st.lists(st.sampled_from(SIGNAL_NAMES), min_size=1, max_size=6, unique=True))
    signals = {
        name: {
            "purpose": draw(st.sampled_from(purpose_names)),
            "sensitivity": draw(st.integers(0, 3)),
            "sale_or_share": draw(st.booleans()),
            "third_party": draw(st.booleans()),
            "label": label(name.replace("_", " ")),
        }
        for name in signal_names
    }
    weight = st.integers(0, 100)
    discreet_at, hide_at = sorted(draw(st.lists(st.integers(0, 101), min_size=2, max_size=2)))
    data = {
        "version": 1,
        "policy_id": "generated",
        "purposes": purposes,
        "signals": signals,
        "categories": categories,
        "invasiveness": {
            "weights": {
                key: draw(weight)
                for key in ("sensitive_category", "signal_sensitivity", "fresh_activity", "inferred", "third_party")
            },
            "fresh_activity_seconds": draw(st.sampled_from([0, 60, 900, 3600])),
            "discreet_at": discreet_at,
            "hide_at": hide_at,
        },
        "unknown_categories": draw(st.sampled_from(["discreet", "hide", "keep"])),
        "routes": [
            {
                "path": "/recommendations",
                "items": "/items",
                "default_signals": draw(st.lists(st.sampled_from(signal_names), max_size=2, unique=True)),
            }
        ],
    }
    return policy_from_mapping(data, source="generated")


def policies() -> st.SearchStrategy[Policy]:
    return st.one_of(st.just(DEMO_POLICY), st.just(TEST_POLICY), generated_policies())


def topic_names(policy: Policy) -> list[str]:
    """Category names an upstream may send: the policy's own, and some it does not know."""
    return sorted({*policy.categories, *EXTRA_CATEGORIES})


def _full_width(name: str) -> str:
    """`gambling` in full-width letters, which NFKC turns back into ASCII."""
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in name)


def category_spellings(policy: Policy) -> list[str]:
    """Category labels as upstreams send them: the policy's own ids, ids it does not know, and both
    spelled otherwise (case, blanks, full-width letters), which are the same ids after normalization."""
    names = topic_names(policy)
    odd = [variant for name in names for variant in (name.upper(), f" {name.title()}\t", _full_width(name))]
    return sorted({*names, *odd, *UNKNOWN_CATEGORIES})


def signal_names(policy: Policy) -> list[str]:
    return [*policy.signals, *UNKNOWN_SIGNALS]


def states(policy: Policy) -> st.SearchStrategy[UserState]:
    """Any stored controls for this policy, with snoozes that have ended or not by `NOW`."""
    until = st.one_of(st.none(), st.sampled_from([NOW - timedelta(days=1), NOW + timedelta(days=1)]))
    sensitive_names = [name for name in policy.categories if is_sensitive_category(policy, name)]
    return st.builds(
        UserState,
        personalization=st.booleans(),
        consent=st.dictionaries(st.sampled_from(list(policy.purposes)), st.sampled_from(["granted", "denied"])),
        signals=st.dictionaries(st.sampled_from(list(policy.signals)), st.booleans()),
        muted=st.dictionaries(st.sampled_from(topic_names(policy)), until, max_size=3),
        sensitive=st.dictionaries(st.sampled_from(sensitive_names), st.booleans()) if sensitive_names else st.just({}),
        locale=st.sampled_from([None, *policy.locales]),
    )


def request_signals(policy: Policy) -> st.SearchStrategy[RequestSignals]:
    verdicts = st.dictionaries(st.sampled_from(list(policy.purposes)), st.booleans())
    return st.builds(
        RequestSignals,
        gpc=st.booleans(),
        minor=st.booleans(),
        tcf=st.one_of(st.none(), verdicts.map(lambda found: frozenset(found.items()))),
    )


def items(policy: Policy, *, max_size: int = 12) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Well-formed items (docs/architecture.md §2), with ids unique in the list."""
    item = st.fixed_dictionaries(
        {"categories": st.lists(st.sampled_from(category_spellings(policy)), max_size=3)},
        optional={
            "signals": st.lists(st.sampled_from(signal_names(policy)), max_size=3),
            "signal_age_seconds": st.one_of(st.integers(0, 5000), st.floats(0, 5000)),
            "inferred": st.booleans(),
        },
    )
    return st.lists(item, max_size=max_size).map(
        lambda drawn: [{"id": f"item-{index}", **fields} for index, fields in enumerate(drawn)]
    )


def sale_or_share_or_gpc_signals(policy: Policy) -> frozenset[str]:
    """Signals GPC opts out of: marked `sale_or_share`, or used for a purpose that `follows_gpc`."""
    return frozenset(
        name
        for name, signal in policy.signals.items()
        if signal.sale_or_share or policy.purposes[signal.purpose].follows_gpc
    )


def uses_any(item: dict[str, Any], names: Sequence[str] | frozenset[str], default: Sequence[str]) -> bool:
    signals = item.get("signals")
    return any(name in names for name in (default if signals is None else signals))
