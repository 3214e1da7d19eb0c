"""Tests for the TC string decoder: real strings with known decodings, plus strings built here."""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from guardrail.consent import tcf
from guardrail.consent.tcf import MAX_LENGTH, TcfError, TCString, decode, decode_cached, to_json

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "tcf"  # MIT, credited in its README.md
NAMES = ("a", "b", "c", "d")
# Fixture d's vendor legitimate interest section is malformed (see test_fixture_d_is_malformed).
WELL_FORMED = ("a", "b", "c")
# Bits before the vendor consent section: Version .. PublisherCC.
HEADER_BITS = 213


def load(name: str) -> dict[str, Any]:
    path = FIXTURES / f"gguridi-v2-consent_{name}.json"
    return cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))


def id_set(flags: dict[str, bool]) -> frozenset[int]:
    return frozenset(int(key) for key, value in flags.items() if value)


def naive_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def assert_matches_core(tc: TCString, core: dict[str, Any], *, skip: Iterable[str] = ()) -> None:
    """Every field of the fixture's expected decoding that `TCString` exposes."""
    scalars = {
        "version": tc.version,
        "cmpId": tc.cmp_id,
        "cmpVersion": tc.cmp_version,
        "consentScreen": tc.consent_screen,
        "consentLanguage": tc.consent_language,
        "vendorListVersion": tc.vendor_list_version,
        "policyVersion": tc.policy_version,
        "isServiceSpecified": tc.is_service_specific,
        "useNonStandardStacks": tc.use_non_standard_texts,
        "purposeOneTreatment": tc.purpose_one_treatment,
        "publisherCountryCode": tc.publisher_cc,
        "maxVendorId": tc.max_vendor_id,
        # The fixtures keep whole seconds only; the string has deciseconds.
        "created": tc.created.replace(microsecond=0),
        "lastUpdated": tc.last_updated.replace(microsecond=0),
    }
    sets = {
        "specialFeatureOptins": tc.special_feature_opt_ins,
        "purposeConsents": tc.purpose_consents,
        "purposeLegitimateInterests": tc.purpose_legitimate_interests,
        "vendorConsents": tc.vendor_consents,
        "vendorLegitimateInterests": tc.vendor_legitimate_interests,
    }
    skipped = set(skip)
    for key, got in scalars.items():
        want = core[key]
        if key in ("created", "lastUpdated"):
            want = naive_utc(want)
        assert got == want, key
    for key, got_ids in sets.items():
        if key in core and key not in skipped:
            assert got_ids == id_set(core[key]), key


# --- an encoder, so that tests can say exactly which bits a string holds -----------------------

ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


class BitWriter:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def uint(self, value: int, width: int) -> None:
        assert 0 <= value < 1 << width, (value, width)
        self.parts.append(format(value, f"0{width}b"))

    def flag(self, value: bool) -> None:
        self.parts.append("1" if value else "0")

    def ids(self, ids: Iterable[int], width: int) -> None:
        bits = ["0"] * width
        for i in ids:
            bits[i - 1] = "1"
        self.parts.append("".join(bits))

    def letters(self, text: str) -> None:
        for char in text:
            self.uint(ord(char) - ord("A"), 6)

    def ranges(self, entries: Sequence[tuple[int, int]]) -> None:
        self.uint(len(entries), 12)
        for start, end in entries:
            self.flag(start != end)
            self.uint(start, 16)
            if start != end:
                self.uint(end, 16)

    def raw(self, bits: str) -> None:
        self.parts.append(bits)

    def encode(self) -> str:
        bits = "".join(self.parts)
        bits += "0" * (-len(bits) % 6)
        return "".join(ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def deciseconds(moment: datetime) -> int:
    return round(moment.timestamp() * 10)


CREATED = datetime(2024, 5, 1, 12, 30, 15, 300_000, tzinfo=UTC)
UPDATED = datetime(2024, 6, 2, 8, 0, 0, tzinfo=UTC)


def header(
    *,
    version: int = 2,
    language: str = "FR",
    country: str = "DE",
    created: datetime = CREATED,
    policy_version: int = 5,
    purpose_consents: Iterable[int] = (1, 3, 4, 11),
    purpose_interests: Iterable[int] = (2, 7, 10),
) -> BitWriter:
    """Version .. PublisherCC with fixed, recognisable values (the ones a test varies are arguments)."""
    w = BitWriter()
    w.uint(version, 6)
    w.uint(deciseconds(created), 36)
    w.uint(deciseconds(UPDATED), 36)
    w.uint(300, 12)  # CmpId
    w.uint(7, 12)  # CmpVersion
    w.uint(3, 6)  # ConsentScreen
    w.letters(language)
    w.uint(150, 12)  # VendorListVersion
    w.uint(policy_version, 6)  # TcfPolicyVersion
    w.flag(True)  # IsServiceSpecific
    w.flag(False)  # UseNonStandardTexts
    w.ids({2}, 12)
    w.ids(set(purpose_consents), 24)
    w.ids(set(purpose_interests), 24)
    w.flag(True)  # PurposeOneTreatment
    w.letters(country)
    assert len("".join(w.parts)) == HEADER_BITS
    return w


@dataclass(frozen=True)
class Vendors:
    max_id: int
    ids: frozenset[int] = frozenset()
    ranges: Sequence[tuple[int, int]] | None = None  # given: range encoding with these entries

    def write(self, w: BitWriter) -> None:
        w.uint(self.max_id, 16)
        w.flag(self.ranges is not None)
        if self.ranges is None:
            w.ids(self.ids, self.max_id)
        else:
            w.ranges(self.ranges)


Restriction = tuple[int, int, Sequence[tuple[int, int]]]  # PurposeId, RestrictionType, vendors


def core(
    consents: Vendors,
    interests: Vendors = Vendors(0),
    restrictions: Sequence[Restriction] = (),
    **header_fields: Any,
) -> str:
    w = header(**header_fields)
    consents.write(w)
    interests.write(w)
    w.uint(len(restrictions), 12)
    for purpose, kind, entries in restrictions:
        w.uint(purpose, 6)
        w.uint(kind, 2)
        w.ranges(entries)
    return w.encode()


def compact(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Ids as the shortest list of (start, end) ranges."""
    runs: list[tuple[int, int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def bits_of(segment: str) -> str:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return "".join(format(byte, "08b") for byte in raw)[: len(segment) * 6]


# --- the fixtures ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WELL_FORMED)
def test_fixture_decodes_as_expected(name: str) -> None:
    data = load(name)
    tc = decode(data["consent"])
    assert_matches_core(tc, data["core"])
    assert tc.created.tzinfo is UTC
    assert tc.last_updated.tzinfo is UTC


def test_fixture_d_is_malformed() -> None:
    """Fixture d's vendor LI section claims MaxVendorId 57378 and 2441 range entries, has ranges
    such as 10885-4129, and runs out of data after 41 entries. The expected decoding (vendor 0,
    vendor 57379 > MaxVendorId) comes from a decoder that reads past the end; ours refuses it."""
    data = load("d")
    with pytest.raises(TcfError, match="vendor legitimate interest"):
        decode(data["consent"])

    # Everything before that section agrees: keep it, put an empty LI section and no publisher
    # restrictions after it.
    core_bits = bits_of(data["consent"].split(".")[0])
    w = BitWriter()
    w.raw(core_bits[: HEADER_BITS + 17 + data["core"]["maxVendorId"]])
    Vendors(0).write(w)
    w.uint(0, 12)
    tc = decode(w.encode())
    assert_matches_core(tc, data["core"], skip={"vendorLegitimateInterests"})
    assert tc.vendor_legitimate_interests == frozenset()


@pytest.mark.parametrize("name", NAMES)
def test_every_prefix_decodes_or_raises_tcf_error(name: str) -> None:
    text = load(name)["consent"]
    for end in range(len(text) + 1):
        try:
            result = decode(text[:end])
        except TcfError:
            continue  # any other exception fails the test
        assert isinstance(result, TCString)


@pytest.mark.parametrize("name", WELL_FORMED)
def test_truncated_core_is_rejected(name: str) -> None:
    core_segment = load(name)["consent"].split(".")[0]
    # The last character may hold nothing but padding bits; any shorter prefix lacks data.
    for end in range(len(core_segment) - 1):
        with pytest.raises(TcfError):
            decode(core_segment[:end])


def test_standard_base64_and_padding_are_accepted() -> None:
    text = load("a")["consent"]
    expected = decode(text)
    assert "-" in text
    assert "_" in text
    standard = text.replace("-", "+").replace("_", "/")
    assert decode(standard) == expected
    segments = standard.split(".")
    assert decode(".".join(s + "==" for s in segments)) == expected


# --- built strings -----------------------------------------------------------------------------


def test_header_fields() -> None:
    tc = decode(core(Vendors(0)))
    assert tc.version == 2
    assert tc.created == CREATED  # deciseconds survive
    assert tc.last_updated == UPDATED
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (300, 7, 3)
    assert (tc.consent_language, tc.publisher_cc) == ("FR", "DE")
    assert (tc.vendor_list_version, tc.policy_version) == (150, 5)
    assert tc.is_service_specific
    assert not tc.use_non_standard_texts
    assert tc.purpose_one_treatment
    assert tc.special_feature_opt_ins == {2}
    assert tc.purpose_consents == {1, 3, 4, 11}
    assert tc.purpose_legitimate_interests == {2, 7, 10}
    assert tc.max_vendor_id == 0
    assert tc.vendor_consents == tc.vendor_legitimate_interests == frozenset()


def test_bitfield_encoding() -> None:
    tc = decode(core(Vendors(12, frozenset({1, 5, 12})), Vendors(4, frozenset({4}))))
    assert tc.max_vendor_id == 12
    assert tc.vendor_consents == {1, 5, 12}
    assert tc.vendor_legitimate_interests == {4}


def test_range_encoding_round_trip() -> None:
    rng = random.Random(2024)
    ids = frozenset(rng.sample(range(1, 3000), 400)) | set(range(100, 180)) | {3000}
    li = frozenset(range(2, 51, 2))
    tc = decode(core(Vendors(3000, ranges=compact(ids)), Vendors(50, ranges=compact(li))))
    assert tc.max_vendor_id == 3000
    assert tc.vendor_consents == ids
    assert tc.vendor_legitimate_interests == li


def test_overlapping_ranges_are_a_union() -> None:
    tc = decode(core(Vendors(40, ranges=[(10, 20), (15, 30), (5, 5), (31, 31), (12, 12)])))
    assert tc.vendor_consents == {5, *range(10, 32)}


def test_many_huge_ranges_decode_quickly() -> None:
    # As many full-width ranges as fit under MAX_LENGTH; expanding each one separately would take
    # over a hundred million set insertions.
    text = core(Vendors(65535, ranges=[(1, 65535)] * 1800))
    assert len(text) <= MAX_LENGTH
    assert len(decode(text).vendor_consents) == 65535


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([(20, 10)], "end < start"),
        ([(0, 0)], "vendor 0"),
        ([(0, 5)], "vendor 0"),
        ([(5, 41)], "MaxVendorId 40"),
        ([(41, 41)], "MaxVendorId 40"),
    ],
)
def test_bad_range_entries_are_rejected(entries: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(TcfError, match=message):
        decode(core(Vendors(40, ranges=entries)))
    with pytest.raises(TcfError, match=message):
        decode(core(Vendors(40, ranges=[(1, 3)]), Vendors(40, ranges=entries)))


def test_publisher_restrictions_may_repeat_a_vendor() -> None:
    restrictions: list[Restriction] = [
        (2, 1, [(5, 5), (3, 10), (5, 5)]),
        (2, 0, [(5, 5)]),
        (7, 2, [(1, 9), (20, 20)]),
    ]
    tc = decode(core(Vendors(20, frozenset({5, 20})), Vendors(9, frozenset({5})), restrictions))
    assert tc.vendor_consents == {5, 20}
    assert tc.vendor_legitimate_interests == {5}


def test_other_segments_are_tolerated() -> None:
    text = core(Vendors(10, frozenset({3})))
    publisher = BitWriter()
    publisher.uint(3, 3)  # SegmentType: publisher TC
    publisher.ids({1, 2}, 24)  # PubPurposesConsent
    publisher.ids({}, 24)  # PubPurposesLITransparency
    publisher.uint(0, 6)  # NumCustomPurposes
    expected = decode(text)
    assert expected.vendor_consents == {3}
    for tail in (publisher.encode(), "", "!!!", "YAAAAAAAAAAA.IGVtd_X9"):
        assert decode(f"{text}.{tail}") == expected


def test_short_bitfield_is_rejected() -> None:
    w = header()
    w.uint(809, 16)  # MaxVendorId
    w.flag(False)  # bitfield
    w.raw("1" * 800)
    # 1030 bits, written as 172 characters: two padding bits are available too.
    with pytest.raises(TcfError, match="bitfield has 802 bits but MaxVendorId is 809"):
        decode(w.encode())


def test_short_bitfield_followed_by_data_is_rejected() -> None:
    w = header()
    w.uint(809, 16)
    w.flag(False)
    w.raw("1" * 800)
    Vendors(0).write(w)
    w.uint(0, 12)
    with pytest.raises(TcfError):
        decode(w.encode())


@pytest.mark.parametrize("version", [0, 1, 3, 63])
def test_other_versions_are_rejected(version: int) -> None:
    with pytest.raises(TcfError, match=f"version is {version}"):
        decode(core(Vendors(0), version=version))


def test_letters_beyond_z_are_rejected() -> None:
    with pytest.raises(TcfError, match="ConsentLanguage"):
        decode(core(Vendors(0), language="E["))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "=",
        "!!!",
        "abc",
        "C",
        "CA",
        "CAAAAAAA",
        " COxR03kOxR1CqBcABCENAgCMAP_AAH_AAAqIF3EXySoGY2thI2YVFxBEIYwfJxyigMgChgQIsSwNQIeF",
        "COxR03kOxR1CqBcABCENAgCMAP=AAH_AAAqIF3EXySoGY2thI2YVFxBEIYwfJxyigMgChgQIsSwNQ",
        "CPIKj1vPPdzL-ACAnAFRBACsAP_AAH_AAAqIHFNf_X_fb3_j-_59_9t0eY1f9_7_v20zjgeds-8Nyd_X\n",
        "Cé",
        "C\x00AAAA",
        # TCF v1 (version 1), from the v1 spec's examples.
        "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA",
        "BOj8iv4Oj8iwYAHADBENCGOAAAAoCAAA",
        "x" * (MAX_LENGTH + 1),
    ],
)
def test_garbage_raises_tcf_error(garbage: str) -> None:
    with pytest.raises(TcfError):
        decode(garbage)
    assert decode_cached(garbage) is None


def test_non_text_raises_tcf_error() -> None:
    for value in (None, b"COxR03kOxR1CqBcABCENAgCMAP_AAH_AAAqIF3EXyS", 42):
        with pytest.raises(TcfError):
            decode(cast(str, value))
        assert decode_cached(cast(str, value)) is None


def test_decode_cached() -> None:
    text = load("b")["consent"]
    first = decode_cached(text)
    assert first is not None
    assert first == decode(text)
    assert decode_cached(text) is first

    # A malformed string is kept too (as None), so it is not decoded again on every request.
    assert decode_cached("!!!-not-a-tc-string") is None
    assert "!!!-not-a-tc-string" in tcf._decoded.cache
    kept = len(tcf._decoded.cache)
    assert decode_cached("!!!-not-a-tc-string") is None
    assert len(tcf._decoded.cache) == kept

    # Overlong strings never reach the cache.
    assert decode_cached("C" * (MAX_LENGTH + 1)) is None
    assert "C" * (MAX_LENGTH + 1) not in tcf._decoded.cache and len(tcf._decoded.cache) == kept


def test_to_json() -> None:
    data = load("b")
    out = to_json(decode(data["consent"]))
    assert set(out) == {
        "version",
        "created",
        "updated",
        "cmp_id",
        "vendor_list_version",
        "policy_version",
        "purpose_consents",
        "purpose_legitimate_interests",
        "special_feature_opt_ins",
        "max_vendor_id",
        "vendor_consents",
    }
    core_data = data["core"]
    assert out["created"] == core_data["created"] + "Z"
    assert out["updated"] == core_data["lastUpdated"] + "Z"
    assert out["version"] == 2
    assert out["policy_version"] == core_data["policyVersion"]
    assert out["cmp_id"] == core_data["cmpId"]
    assert out["vendor_list_version"] == core_data["vendorListVersion"]
    assert out["max_vendor_id"] == core_data["maxVendorId"]
    assert out["purpose_consents"] == sorted(id_set(core_data["purposeConsents"]))
    assert out["special_feature_opt_ins"] == [1, 2]
    assert out["vendor_consents"] == sorted(id_set(core_data["vendorConsents"]))
    assert json.loads(json.dumps(out)) == out  # plain JSON types only
