"""TC string decoding (guardrail/consent/tcf.py): decode, and decode_cached as requests see it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from guardrail.consent.tcf import decode, decode_cached

_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = _ROOT / "tests" / "data" / "tcf"  # MIT, credited in its README.md


def tc_string(name: str) -> str:
    document = json.loads((FIXTURES / f"gguridi-v2-consent_{name}.json").read_text(encoding="utf-8"))
    return str(document["consent"])


# a: 1,161 characters, with a disclosed vendors segment; b: 294, core only; c: 1,037, with publisher TC.
WELL_FORMED = ["a", "b", "c"]


@pytest.mark.benchmark(group="tcf")
@pytest.mark.parametrize("name", WELL_FORMED)
def test_decode(benchmark: BenchmarkFixture, name: str) -> None:
    text = tc_string(name)
    benchmark.extra_info["characters"] = len(text)
    decoded = benchmark(decode, text)
    assert decoded.version == 2


@pytest.mark.benchmark(group="tcf")
@pytest.mark.parametrize("name", WELL_FORMED)
def test_decode_cached(benchmark: BenchmarkFixture, name: str) -> None:
    """The same string again, as on every request of a user after the first: an LRU hit."""
    text = tc_string(name)
    decode_cached(text)
    decoded = benchmark(decode_cached, text)
    assert decoded is not None


@pytest.mark.benchmark(group="tcf")
def test_decode_malformed(benchmark: BenchmarkFixture) -> None:
    """Fixture d's vendor section is malformed: decode_cached caches the None too."""
    text = tc_string("d")
    decode_cached(text)
    assert benchmark(decode_cached, text) is None
