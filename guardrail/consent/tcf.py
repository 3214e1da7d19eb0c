"""Decoder for IAB TCF v2.x consent strings ("TC strings").

Only the core segment is decoded: it holds everything the guardrail acts on (purposes, special
features, vendors). Other segments (disclosed vendors, publisher TC) are skipped unread, so a CMP
that writes an odd one cannot cost the user the consent recorded in the core segment.

Decoding reports raw fields only. Policy rules (for instance "strings created after 2023-09-30
with TcfPolicyVersion < 4 are invalid") belong to the caller.

Layout: "TCF v2 Consent string and vendor list formats", IAB Europe, core segment.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate, chain

from guardrail.caching import BoundedCache

__all__ = ["MAX_LENGTH", "TCString", "TcfError", "decode", "decode_cached", "to_json"]

# Real TC strings stay well under a cookie's 4 KB; anything far longer is an attack on decode time
# or on the cache's memory, not consent.
MAX_LENGTH = 10_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TcfError(ValueError):
    """The TC string is malformed; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class TCString:
    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    purpose_one_treatment: bool
    publisher_cc: str
    special_feature_opt_ins: frozenset[int]
    purpose_consents: frozenset[int]
    purpose_legitimate_interests: frozenset[int]
    max_vendor_id: int
    vendor_consents: frozenset[int]
    vendor_legitimate_interests: frozenset[int]


class _Bits:
    """Reads big-endian fields from a string of '0'/'1' characters.

    A text of bits keeps the work in C (str slicing, int(..., 2), str.split) while staying easy
    to read; a TC string is at most a few thousand bits.
    """

    __slots__ = ("bits", "pos")

    def __init__(self, bits: str) -> None:
        self.bits = bits
        self.pos = 0

    def take(self, width: int, what: str) -> str:
        end = self.pos + width
        if end > len(self.bits):
            raise self.short(width, what)
        chunk = self.bits[self.pos : end]
        self.pos = end
        return chunk

    def short(self, width: int, what: str) -> TcfError:
        return TcfError(f"data ends at bit {len(self.bits)} while reading {what} ({width} bits from bit {self.pos})")

    def uint(self, width: int, what: str) -> int:
        return int(self.take(width, what), 2)

    def flag(self, what: str) -> bool:
        return self.take(1, what) == "1"

    def ids(self, width: int, what: str) -> frozenset[int]:
        """A bitfield: bit i (from 0) set means id i + 1."""
        # Splitting on "1" leaves the runs of zeros before each set bit; their running sum
        # (plus one per set bit) is the set bits' positions. Several times faster than a loop.
        runs = self.take(width, what).split("1")[:-1]
        return frozenset(accumulate(len(run) + 1 for run in runs))

    def letters(self, what: str) -> str:
        """Two 6-bit letters, A = 0 (language and country codes)."""
        codes = (self.uint(6, what), self.uint(6, what))
        if max(codes) > 25:
            raise TcfError(f"{what} has letter code {max(codes)}, beyond Z (25)")
        return "".join(chr(ord("A") + code) for code in codes)

    def ranges(self, what: str, max_id: int | None) -> list[tuple[int, int]]:
        """NumEntries(12), then per entry IsARange(1) StartOrOnlyId(16) [EndId(16)].

        Ids are checked against `max_id` unless it is None. Reads the bits directly rather than
        through `take`: publisher restrictions alone may hold hundreds of entries.
        """
        count = self.uint(12, f"{what} NumEntries")
        bits, size = self.bits, len(self.bits)
        entries = []
        for n in range(1, count + 1):
            pos = self.pos
            width = 33 if pos < size and bits[pos] == "1" else 17
            if pos + width > size:
                raise self.short(width, f"{what} range entry {n}")
            start = int(bits[pos + 1 : pos + 17], 2)
            end = int(bits[pos + 17 : pos + 33], 2) if width == 33 else start
            self.pos = pos + width
            if max_id is not None:
                if start == 0:
                    raise TcfError(f"{what} entry {n} names vendor 0; ids start at 1")
                if end < start:
                    raise TcfError(f"{what} entry {n} is the range {start}-{end}: end < start")
                if end > max_id:
                    raise TcfError(f"{what} entry {n} names vendor {end} > MaxVendorId {max_id}")
            entries.append((start, end))
        return entries


def _to_bits(segment: str) -> str:
    """URL-safe base64 (also standard '+' and '/', and stray '=' padding) to a text of bits."""
    body = segment.rstrip("=")
    if not body:
        raise TcfError("core segment is empty")
    # Padding with 'A' (six zero bits) instead of '=' lets b64decode accept any length, including
    # the 4n+1 lengths it would refuse; the extra bits are cut off below.
    padded = body + "A" * (-len(body) % 4)
    try:
        raw = b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise TcfError("core segment has characters that are not base64") from None
    return format(int.from_bytes(raw, "big"), f"0{len(raw) * 8}b")[: len(body) * 6]


def _vendors(r: _Bits, what: str) -> tuple[int, frozenset[int]]:
    max_id = r.uint(16, f"{what} MaxVendorId")
    if not r.flag(f"{what} IsRangeEncoding"):
        available = len(r.bits) - r.pos
        if available < max_id:
            raise TcfError(f"{what} bitfield has {available} bits but MaxVendorId is {max_id}")
        return max_id, r.ids(max_id, f"{what} bitfield")
    # Merge before expanding: 4095 overlapping ranges of 65535 ids each would otherwise cost
    # hundreds of millions of set insertions; merged, the work is bounded by MaxVendorId.
    merged: list[list[int]] = []
    for start, end in sorted(r.ranges(what, max_id)):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return max_id, frozenset(chain.from_iterable(range(a, b + 1) for a, b in merged))


def _skip_publisher_restrictions(r: _Bits) -> None:
    # Not exposed, but read so that a truncated core segment is noticed. Their content is not
    # validated: a vendor may legitimately appear in several restrictions.
    for _ in range(r.uint(12, "NumPubRestrictions")):
        r.take(8, "publisher restriction PurposeId/RestrictionType")
        r.ranges("publisher restriction", None)


def _when(r: _Bits, what: str) -> datetime:
    return _EPOCH + timedelta(milliseconds=100 * r.uint(36, what))


def decode(tc_string: str) -> TCString:
    """Decode the core segment of a TC string; raise `TcfError` on any malformed input."""
    if not isinstance(tc_string, str):
        raise TcfError(f"a TC string is text, not {type(tc_string).__name__}")
    if len(tc_string) > MAX_LENGTH:
        raise TcfError(f"TC string is {len(tc_string)} characters long; the limit is {MAX_LENGTH}")
    r = _Bits(_to_bits(tc_string.partition(".")[0]))
    version = r.uint(6, "Version")
    if version != 2:
        raise TcfError(f"TC string version is {version}; only version 2 is supported")
    created = _when(r, "Created")
    last_updated = _when(r, "LastUpdated")
    cmp_id = r.uint(12, "CmpId")
    cmp_version = r.uint(12, "CmpVersion")
    consent_screen = r.uint(6, "ConsentScreen")
    consent_language = r.letters("ConsentLanguage")
    vendor_list_version = r.uint(12, "VendorListVersion")
    policy_version = r.uint(6, "TcfPolicyVersion")
    is_service_specific = r.flag("IsServiceSpecific")
    use_non_standard_texts = r.flag("UseNonStandardTexts")
    special_feature_opt_ins = r.ids(12, "SpecialFeatureOptIns")
    purpose_consents = r.ids(24, "PurposesConsent")
    purpose_legitimate_interests = r.ids(24, "PurposesLITransparency")
    purpose_one_treatment = r.flag("PurposeOneTreatment")
    publisher_cc = r.letters("PublisherCC")
    max_vendor_id, vendor_consents = _vendors(r, "vendor consent")
    _, vendor_legitimate_interests = _vendors(r, "vendor legitimate interest")
    _skip_publisher_restrictions(r)
    return TCString(
        version=version,
        created=created,
        last_updated=last_updated,
        cmp_id=cmp_id,
        cmp_version=cmp_version,
        consent_screen=consent_screen,
        consent_language=consent_language,
        vendor_list_version=vendor_list_version,
        policy_version=policy_version,
        is_service_specific=is_service_specific,
        use_non_standard_texts=use_non_standard_texts,
        purpose_one_treatment=purpose_one_treatment,
        publisher_cc=publisher_cc,
        special_feature_opt_ins=special_feature_opt_ins,
        purpose_consents=purpose_consents,
        purpose_legitimate_interests=purpose_legitimate_interests,
        max_vendor_id=max_vendor_id,
        vendor_consents=vendor_consents,
        vendor_legitimate_interests=vendor_legitimate_interests,
    )


def _decode_or_none(tc_string: str) -> TCString | None:
    try:
        return decode(tc_string)
    except TcfError:
        return None


def decode_cached(tc_string: str) -> TCString | None:
    """`decode` through a bounded cache (guardrail/caching.py); None if
    malformed, which is cached too. Overlong strings are refused before reaching the cache so that
    they can neither cost decode time nor fill the cache's memory."""
    if not isinstance(tc_string, str) or len(tc_string) > MAX_LENGTH:
        return None
    return _decoded(tc_string)


# One user's string repeats on every request; a malformed one is kept too (as None).
_decoded = BoundedCache.memoize(4096, _decode_or_none)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(tc: TCString) -> dict[str, object]:
    """The summary printed by `guardrail tcf decode`."""
    return {
        "version": tc.version,
        "created": _utc(tc.created),
        "updated": _utc(tc.last_updated),
        "cmp_id": tc.cmp_id,
        "vendor_list_version": tc.vendor_list_version,
        "policy_version": tc.policy_version,
        "purpose_consents": sorted(tc.purpose_consents),
        "purpose_legitimate_interests": sorted(tc.purpose_legitimate_interests),
        "special_feature_opt_ins": sorted(tc.special_feature_opt_ins),
        "max_vendor_id": tc.max_vendor_id,
        "vendor_consents": sorted(tc.vendor_consents),
    }
