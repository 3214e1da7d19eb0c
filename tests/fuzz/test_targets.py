"""The fuzz targets' promises, checked on hypothesis examples in the normal suite (the atheris
fuzzers run the same targets, coverage-guided: test_fuzzers.py). Plus properties with an oracle of
their own: TC strings written field by field decode to those fields; Accept-Language picks by the RFC."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from hypothesis import given
from hypothesis import strategies as st

from guardrail.consent.tcf import decode
from guardrail.locale import LocaleNegotiator
from tests.consent.test_tcf import ALPHABET, Vendors, compact, core
from tests.fuzz.seeds import tc_strings
from tests.fuzz.targets import JWT, JWT_KEY_ENV, READER, Request, check_request, check_tc_string
from tests.strategies import examples

FIXTURES = tc_strings()

# -- TC strings -------------------------------------------------------------------------------------


@st.composite
def mutated_tc_strings(draw: st.DrawFn) -> str:
    """A real TC string with a few characters replaced, inserted or removed, or cut short."""
    text = list(draw(st.sampled_from(FIXTURES)))
    characters = st.sampled_from([*ALPHABET, ".", "=", "+", "/", " ", "\x00", "é", "\u202e"])
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        if action == "replace" and position < len(text):
            text[position] = draw(characters)
        elif action == "insert":
            text.insert(position, draw(characters))
        elif action == "delete":
            del text[position : position + draw(st.integers(1, 5))]
        else:
            del text[position:]
    return "".join(text)


@examples(150)
@given(st.one_of(mutated_tc_strings(), st.text(max_size=300), st.text(alphabet=ALPHABET + ".", max_size=400)))
def test_any_text_decodes_consistently_or_raises_tcf_error(text: str) -> None:
    check_tc_string(text)


ids = st.frozensets(st.integers(1, 24))


@st.composite
def vendor_sections(draw: st.DrawFn) -> Vendors:
    max_id = draw(st.integers(0, 300))
    chosen = draw(st.frozensets(st.integers(1, max_id))) if max_id else frozenset()
    as_ranges = draw(st.booleans())
    return Vendors(max_id, chosen, compact(chosen) if as_ranges else None)


@examples(60)
@given(
    consents=vendor_sections(),
    interests=vendor_sections(),
    purposes=ids,
    purpose_interests=ids,
    policy_version=st.integers(0, 63),
    created=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_a_string_written_field_by_field_decodes_to_those_fields(
    consents: Vendors,
    interests: Vendors,
    purposes: frozenset[int],
    purpose_interests: frozenset[int],
    policy_version: int,
    created: datetime,
) -> None:
    text = core(
        consents,
        interests,
        purpose_consents=purposes,
        purpose_interests=purpose_interests,
        policy_version=policy_version,
        created=created,
    )
    tc = decode(text)
    assert tc.purpose_consents == purposes
    assert tc.purpose_legitimate_interests == purpose_interests
    assert (tc.max_vendor_id, tc.vendor_consents) == (consents.max_id, consents.ids)
    assert tc.vendor_legitimate_interests == interests.ids
    assert tc.policy_version == policy_version
    assert abs(tc.created - created) <= timedelta(milliseconds=50)  # the string keeps deciseconds
    check_tc_string(text)
    check_tc_string(f"{text}.YAAAAAAAAAAA")  # other segments are skipped unread


# -- request headers --------------------------------------------------------------------------------

HEADER_NAMES = [b"sec-gpc", b"x-user-id", b"x-user-age", b"accept-language", b"cookie", b"x-tc-string",
                b"authorization", b"x-other"]  # fmt: skip
VALUE_PARTS = [b"1", b" 1 ", b"0", b"1, 0", b",", b"\t1", b"true", b"alice", b"bob", b"carol", b" alice ", b"17",
               b"999", b"-1", b"1e3", b"ko-KR,ko;q=0.9", b"en;q=nan", b"*;q=0.1", b"fr, ko;q=0", b"<script>",
               b"\xe2\x80\xae", b"\xc3\xa9", b"\xff", b"\x00", b"euconsent-v2=", b"; ", b"Bearer ", b"a.b.c",
               *(fixture.encode() for fixture in FIXTURES[:2])]  # fmt: skip
values = st.lists(st.sampled_from(VALUE_PARTS) | st.binary(max_size=6), max_size=4).map(b"".join)
requests = st.builds(
    Request,
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), values), max_size=6),
    query=st.sampled_from([b"", b"gdpr=", b"gdpr=%ZZ", b"a=1&gdpr=" + FIXTURES[4].encode()]) | st.binary(max_size=8),
    peer=st.sampled_from(["127.0.0.1", "::1", "203.0.113.9", "testclient", "", "999.1.1.1"]),
)


@examples(120)
@given(requests)
async def test_any_request_headers_get_a_checked_response(request: Request) -> None:
    await check_request(request)


@examples(40)
@given(st.lists(st.sampled_from([b"1", b" 1", b"1\t", b"0", b"1, 0", b"0,1", b"", b" ", b"true", b"11", b"1;"])))
async def test_gpc_is_honoured_exactly_when_one_value_is_1(gpc: list[bytes]) -> None:
    # Alice allows everything: only GPC can hide her item that relies on a sale_or_share signal.
    shown = await check_request(Request([(b"x-user-id", b"alice"), *((b"sec-gpc", value) for value in gpc)]))
    honoured = any(part.strip(b" \t") == b"1" for value in gpc for part in value.split(b","))
    assert ("p" in shown) is not honoured


def test_the_tc_string_lookup_reads_header_then_cookie_then_query() -> None:
    header, cookie, query = FIXTURES[0], FIXTURES[2], FIXTURES[4]
    both = {b"x-tc-string": f" {header} ".encode(), b"cookie": f"a=1; euconsent-v2={cookie}".encode()}
    assert READER.find(both, f"gdpr={query}".encode()) == header
    assert READER.find({b"cookie": both[b"cookie"]}, f"gdpr={query}".encode()) == cookie
    assert READER.find({b"cookie": b'euconsent-v2="unterminated'}, f"gdpr={query}".encode()) == query


# -- Accept-Language --------------------------------------------------------------------------------

TAGS = ["en", "en-US", "ko", "ko-KR", "fr", "de-CH", "*", "EN", "Ko-kr", "", "zz"]
ENABLED = ("en", "ko")


@examples(100)
@given(
    st.lists(
        st.tuples(st.sampled_from(TAGS), st.one_of(st.none(), st.sampled_from(["0", "0.5", "1", "0.001", "x", "nan"])))
    )
)
def test_accept_language_picks_the_enabled_tag_with_the_highest_quality(entries: list[tuple[str, str | None]]) -> None:
    header = ", ".join(tag if q is None else f"{tag};q={q}" for tag, q in entries)
    ranked = []
    for position, (tag, q) in enumerate(entries):
        quality = 1.0 if q is None else (float(q) if q not in ("x", "nan") else 0.0)
        candidates = [c for c in (tag.lower(), tag.lower().split("-")[0]) if c in ENABLED]
        if quality > 0 and candidates:
            ranked.append((-quality, position, candidates[0]))
    expected = min(ranked)[2] if ranked else "ko"
    assert LocaleNegotiator(ENABLED, "ko").choose(None, header.encode()) == expected


@examples(100)
@given(st.binary(max_size=200))
def test_any_accept_language_bytes_choose_an_enabled_locale(header: bytes) -> None:
    assert LocaleNegotiator(ENABLED, "en").choose(None, header) in ENABLED


# -- bearer tokens ----------------------------------------------------------------------------------

claim_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 10**400) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@examples(100)
@given(
    claims=st.fixed_dictionaries(
        {
            "sub": st.text(st.characters(codec="ascii"), min_size=1, max_size=10) | claim_values,
            # In the future (2**33 seconds is the year 2242), past any float, or not a time at all.
            "exp": st.integers(2**33, 2**62) | st.integers(10**310, 10**400) | claim_values,
        },
        optional={"age": claim_values, "aud": claim_values},
    )
)
def test_a_signed_token_with_any_claims_names_a_caller_or_nobody(claims: dict[str, Any]) -> None:
    # Only the key holder can sign, but even they cannot make verifying a token fail: a claim of any
    # JSON type gives a caller or an anonymous one. (An `exp` past any float used to raise OverflowError.)
    token = jwt.api_jws.encode(json.dumps(claims).encode(), os.environ[JWT_KEY_ENV], algorithm="HS256")
    for _ in range(2):  # the second time from the cache of verified tokens
        caller = JWT.tokens.caller(b"Bearer " + token.encode()) if JWT.tokens else None
        assert caller is not None
        if caller.user is not None:
            assert caller.user == str(claims["sub"]).strip() and caller.user.isprintable()
        assert caller.age is None or caller.age == claims.get("age")
