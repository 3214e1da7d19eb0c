"""Seed inputs for each fuzz target: real TC strings (tests/data/tcf/), real-looking request
headers, and recommendation bodies like the demo's. The fuzzers start from these and mutate them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import orjson

from tests.conftest import ROOT
from tests.upstream import DEFAULT_ITEMS

TCF_FIXTURES = ROOT / "tests" / "data" / "tcf"  # MIT, credited in its README.md


def tc_strings() -> list[str]:
    found = []
    for path in sorted(TCF_FIXTURES.glob("gguridi-v2-consent_*.json")):
        consent = json.loads(path.read_text(encoding="utf-8"))["consent"]
        found += [consent, consent.split(".")[0]]
    return found


def seeds(target: str) -> list[bytes]:
    strings = tc_strings()
    if target == "tc_string":
        return [text.encode() for text in strings]
    if target == "request_headers":
        return [
            b"x-user-id: alice\nsec-gpc: 1\naccept-language: ko-KR,ko;q=0.9,en;q=0.8",
            b"x-user-id: bob\nx-user-age: 15\naccept-language: en-US",
            b"x-user-id: carol\nsec-gpc: 0, 1\nsec-gpc: 1\npeer: ::1",
            b"x-user-id: alice\ncookie: theme=dark; euconsent-v2=" + strings[0].encode() + b"; lang=en",
            b"x-user-id: alice\nx-tc-string: " + strings[2].encode(),
            b"x-user-id: alice\n?page=2&gdpr=" + strings[4].encode(),
            b"x-user-id: mallory\npeer: 203.0.113.9\nauthorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
        ]
    if target == "upstream_body":
        catalog = orjson.loads((ROOT / "guardrail" / "demo" / "catalog.json").read_bytes())
        return [
            orjson.dumps({"items": DEFAULT_ITEMS, "page": 1}),
            orjson.dumps({"items": catalog["items"][:20]}),
            orjson.dumps(DEFAULT_ITEMS[:2]),
            b'{"items": [{"id": 1, "categories": ["health.pregnancy"], "signal_age_seconds": 5, "inferred": true}]}',
            b'{"items": []}',
        ]
    raise ValueError(f"no seeds for {target!r}")


def write_seeds(target: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds(target):
        (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)  # libFuzzer names corpus files so
