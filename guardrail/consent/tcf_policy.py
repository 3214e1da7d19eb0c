"""What a request's TC string says about this policy's purposes (issue 6).

The decoder (`tcf.py`) returns raw fields; the TCF rules are applied here:
- a string that cannot be decoded whole is no consent, never consent;
- a string created after 2023-09-30 with TcfPolicyVersion below 4 is no consent;
- when the policy names this service's vendor id, that vendor must have consent;
- purposes 3 to 6 (personalised advertising and content) rest on consent only, never on
  legitimate interest; other purposes may rest on either;
- a policy purpose is allowed when every TCF purpose it maps to (`tcf_purposes`) is allowed.
Purposes without `tcf_purposes` are not covered: stored consent and defaults decide them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from guardrail.caching import BoundedCache
from guardrail.consent.tcf import TCString, decode_cached
from guardrail.policy.models import Policy

# TCF policy v4 took effect then: later strings must say v4 or above.
POLICY_V4_SINCE = datetime(2023, 10, 1, tzinfo=UTC)
CONSENT_ONLY_PURPOSES = frozenset({3, 4, 5, 6})

TcfVerdict = frozenset[tuple[str, bool]]

# TC strings whose verdict is kept: one per user, repeated on every request.
VERDICTS_KEPT = 10_000


class TcfReader:
    def __init__(self, policy: Policy, count: Callable[[str], None] | None = None) -> None:
        tcf = policy.tcf
        self.cookie = tcf.cookie
        self.header = tcf.header.lower().encode("latin-1") if tcf.header else None
        self.query = tcf.query
        self.vendor_id = tcf.vendor_id
        self.mapping = {name: tuple(p.tcf_purposes) for name, p in policy.purposes.items() if p.tcf_purposes}
        self.wanted = frozenset(h for h in (b"cookie" if self.cookie else None, self.header) if h)
        self._count = count or (lambda result: None)
        self._verdicts: BoundedCache[str, TcfVerdict] = BoundedCache(VERDICTS_KEPT)

    def find(self, headers: dict[bytes, bytes], query_string: bytes) -> str | None:
        """The TC string the request carries, from the header, the cookie or the query (in that order)."""
        if self.header is not None and self.header in headers:
            return headers[self.header].decode("latin-1").strip()
        if self.cookie and b"cookie" in headers:
            raw = headers[b"cookie"].decode("latin-1")
            if self.cookie in raw:
                try:
                    morsel = SimpleCookie(raw).get(self.cookie)
                except CookieError:
                    morsel = None
                if morsel is not None:
                    return morsel.value.strip()
        if self.query and query_string:
            values = parse_qs(query_string.decode("latin-1")).get(self.query)
            if values:
                return values[0].strip()
        return None

    def verdict(self, tc_string: str | None) -> TcfVerdict | None:
        """(purpose, allowed) pairs for the mapped purposes; None when the request has no TC string."""
        if tc_string is None or not self.mapping:
            return None
        found = self._verdicts.get(tc_string)
        if found is None:
            found = self._verdicts.put(tc_string, self._judge(decode_cached(tc_string)))
        return found

    def _judge(self, tc: TCString | None) -> TcfVerdict:
        if tc is None:
            self._count("invalid")
            return self._all(False)
        if tc.created >= POLICY_V4_SINCE and tc.policy_version < 4:
            self._count("outdated")
            return self._all(False)
        if self.vendor_id is not None and self.vendor_id not in tc.vendor_consents:
            self._count("vendor_refused")
            return self._all(False)
        self._count("valid")

        def allowed(purpose: int) -> bool:
            if purpose in tc.purpose_consents:
                return True
            return purpose not in CONSENT_ONLY_PURPOSES and purpose in tc.purpose_legitimate_interests

        return frozenset((name, all(allowed(p) for p in purposes)) for name, purposes in self.mapping.items())

    def _all(self, value: bool) -> TcfVerdict:
        return frozenset((name, value) for name in self.mapping)
