"""What the fuzzers check, one function per target, each taking the fuzzer's bytes.

Any exception out of a target is a finding: an AssertionError is a broken promise, anything else an
unhandled error. The atheris runner (`python -m tests.fuzz.run TARGET`) feeds them coverage-guided
inputs; the pytest suite feeds them hypothesis examples (tests/fuzz/test_targets.py).

- `tc_string`: the bytes as a TC string. `decode` returns a consistent `TCString` or raises `TcfError`,
  nothing else; the reader turns any string into a verdict on every mapped purpose.
- `request_headers`: the bytes as request header lines (`name: value`, a `?query` line, a `peer: address`
  line) on a guarded request through the real middleware: a checked 200 every time, GPC never keeps a
  `sale_or_share` item, and each header parser (identity, age, Accept-Language, TC string lookup) answers
  within its contract.
- `upstream_body`: the bytes as an upstream body, plain and gzipped, through the middleware in each
  mode: a defined outcome (checked 200, 502 problem+json, or marked passthrough), never an exception.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import os
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from guardrail import GuardrailMiddleware
from guardrail.callers import MAX_USER_ID_LENGTH
from guardrail.consent.tcf import MAX_LENGTH, TcfError, decode, decode_cached, to_json
from guardrail.consent.tcf_policy import TcfReader
from guardrail.controls import validate_patch
from guardrail.identity import IdentityResolver
from guardrail.policy.models import Identity, JwtSettings
from guardrail.why_links import segment
from tests.conftest import BASE_POLICY, make_policy
from tests.upstream import Upstream, call, http_scope

T = TypeVar("T")

# -- tc_string --------------------------------------------------------------------------------------

TCF_POLICY = make_policy(tcf={"cookie": "euconsent-v2", "header": "x-tc-string", "query": "gdpr", "vendor_id": 7})
READER = TcfReader(TCF_POLICY)
MAPPED = frozenset(READER.mapping)


def tc_string(data: bytes) -> None:
    check_tc_string(data.decode("latin-1"))


def check_tc_string(text: str) -> None:
    verdict = READER.verdict(text)
    assert verdict is not None and {purpose for purpose, _ in verdict} == MAPPED, verdict
    try:
        tc = decode(text)
    except TcfError as exc:
        error = str(exc)
    else:
        assert len(text) <= MAX_LENGTH
        assert tc.version == 2
        assert tc.created.tzinfo is UTC and tc.last_updated.tzinfo is UTC
        letters = tc.consent_language + tc.publisher_cc
        assert len(letters) == 4 and letters.isalpha() and letters.isupper(), letters
        assert tc.special_feature_opt_ins <= frozenset(range(1, 13))
        assert tc.purpose_consents <= frozenset(range(1, 25))
        assert tc.purpose_legitimate_interests <= frozenset(range(1, 25))
        assert all(1 <= vendor <= tc.max_vendor_id for vendor in tc.vendor_consents)
        orjson.dumps(to_json(tc))  # what `guardrail tcf decode` prints
        assert decode_cached(text) == tc
        return
    assert error, "a TcfError says what is wrong"
    assert decode_cached(text) is None
    assert all(not allowed for _, allowed in verdict), "a malformed string is no consent"


# -- request_headers --------------------------------------------------------------------------------

HEADER_POLICY = make_policy(tcf={"cookie": "euconsent-v2", "header": "x-tc-string", "query": "gdpr"})
SALE_OR_SHARE = frozenset(name for name, signal in HEADER_POLICY.signals.items() if signal.sale_or_share)
JWT_KEY_ENV = "GUARDRAIL_FUZZ_JWT_KEY"
os.environ.setdefault(JWT_KEY_ENV, "fuzzing-key-that-is-long-enough-for-hs256")
JWT = IdentityResolver(Identity(source="jwt", jwt=JwtSettings(key_env=JWT_KEY_ENV)))
# Known users with different controls, so that the context cache and the store are exercised too.
USERS: dict[str, dict[str, Any]] = {
    "alice": {"consent": {"personalization": "granted", "sharing": "granted", "measurement": "granted"}},
    "bob": {"personalization": False},
    "carol": {"consent": {"personalization": "granted"}, "muted": {"sports": {"until": None}}},
}
REQUEST_ITEMS = [
    {"id": "w", "categories": ["movies"], "signals": ["watch_history"]},
    {"id": "p", "categories": ["sports"], "signals": ["partner_data"]},  # sale_or_share
    {"id": "n", "categories": ["movies"], "signals": []},
]


@dataclass
class Request:
    """A request as header lines: `name: value` per line, `?query` for the query string, `peer: address`."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    query: bytes = b""
    peer: str = "127.0.0.1"

    @classmethod
    def parse(cls, data: bytes) -> Request:
        request = cls()
        for line in data.split(b"\n"):
            if line.startswith(b"?"):
                request.query = line[1:]
                continue
            name, colon, value = line.partition(b":")
            if not colon:
                continue
            name = name.strip().lower()
            if name == b"peer":
                request.peer = value.strip().decode("latin-1")
            else:
                # HTTP servers hand values over with the surrounding blanks removed.
                request.headers.append((name, value.strip(b" \t")))
        return request

    def values(self, name: bytes) -> list[bytes]:
        return [value for header, value in self.headers if header == name]


def gpc_requested(request: Request) -> bool:
    """The GPC spec: a `Sec-GPC` field value of exactly `1`; repeated fields may come joined by commas."""
    return any(part.strip(b" \t") == b"1" for value in request.values(b"sec-gpc") for part in value.split(b","))


_headers_app: GuardrailMiddleware | None = None


async def headers_app() -> GuardrailMiddleware:
    """The middleware the header target calls, with the known users' controls stored (built once)."""
    global _headers_app
    if _headers_app is None:
        app = GuardrailMiddleware(
            Upstream(body={"items": REQUEST_ITEMS}), policy=HEADER_POLICY, registry=CollectorRegistry()
        )
        now = datetime.now(UTC)
        for user, controls in USERS.items():
            await app.store.patch(user, validate_patch(HEADER_POLICY, controls, now), if_match=None, now=now)
        _headers_app = app
    return _headers_app


def request_headers(data: bytes) -> None:
    run(check_request(Request.parse(data)))


async def check_request(request: Request) -> set[str]:
    """The ids of the items shown."""
    middleware = await headers_app()
    guard = middleware.guard
    wanted = {name: value for name, value in reversed(request.headers) if name in guard.wanted}
    scope = {**http_scope("/recommendations", headers=request.headers), "client": (request.peer, 40000)}
    scope["query_string"] = request.query

    caller = await guard.identity.resolve(scope, wanted)
    if caller.user is not None:
        assert caller.user == caller.user.strip() and caller.user.isprintable()
        assert 0 < len(caller.user) <= MAX_USER_ID_LENGTH
        assert _trusted(request.peer), "identity headers count only from trusted proxies"
    assert caller.age is None or 0 <= caller.age <= 999
    assert (await JWT.resolve(scope, wanted)).user is None, "no token from a fuzzer is signed with the key"
    locale = guard.locales.choose(None, wanted.get(b"accept-language"))
    assert locale in HEADER_POLICY.locales
    found = guard.tcf.find(wanted, request.query)
    assert found is None or found == found.strip()
    guard.tcf.verdict(found)

    sent = await call(middleware, scope)
    outcome = outcome_of(sent)
    assert outcome.status == 200, outcome
    shown = {entry["id"]: entry for entry in orjson.loads(outcome.body)["items"]}
    assert "n" in shown, "a non-personalized item is never hidden for consent"
    if gpc_requested(request):
        assert "p" not in shown, "GPC kept an item that relies on a sale_or_share signal"
    if caller.user is None:
        assert shown.keys() == {"n"}, "an anonymous caller gets nothing personal"
    return set(shown)


def _trusted(peer: str) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network) for network in HEADER_POLICY.identity.trusted_proxies)


# -- upstream_body ----------------------------------------------------------------------------------

# Every purpose granted by default, so that items are kept and annotated without a stored consent.
PURPOSES = {name: {**purpose, "default": "granted"} for name, purpose in BASE_POLICY["purposes"].items()}
MAX_BODY = 64 * 1024
BODY_MODES = {
    (mode, fail_mode): make_policy(mode=mode, fail_mode=fail_mode, purposes=PURPOSES, max_body_bytes=MAX_BODY)
    for mode, fail_mode in (("enforce", "closed"), ("enforce", "open"), ("shadow", "closed"))
}
ALICE = [(b"x-user-id", b"alice")]


@dataclass
class RawUpstream:
    """Answers with exactly these bytes and headers (any Content-Encoding, true or not), in chunks."""

    body: bytes = b"{}"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: int = 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), *self.headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        size = max(1, -(-len(self.body) // self.chunks))
        parts = [self.body[i : i + size] for i in range(0, len(self.body), size)] or [b""]
        for index, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": index < len(parts) - 1})


@dataclass
class Outcome:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


# One middleware per mode for the whole session; each call sets the upstream it asks.
BODY_APPS = {
    mode: GuardrailMiddleware(RawUpstream(), policy=policy, registry=CollectorRegistry())
    for mode, policy in BODY_MODES.items()
}


def outcome_of(sent: list[Message]) -> Outcome:
    start, *rest = sent
    assert start["type"] == "http.response.start"
    assert all(message["type"] == "http.response.body" for message in rest)
    assert rest and not rest[-1].get("more_body", False), "the response ends"
    body = b"".join(message.get("body", b"") for message in rest)
    return Outcome(start["status"], dict(start["headers"]), body)


def decoded(outcome: Outcome) -> Any:
    encoding = outcome.headers.get(b"content-encoding", b"").strip().lower()
    body = outcome.body
    if encoding in (b"gzip", b"x-gzip", b"deflate"):
        body = zlib.decompress(body, wbits=47)
    return orjson.loads(body)


def upstream_body(data: bytes) -> None:
    for mode in BODY_MODES:
        run(body_outcome(mode, RawUpstream(data)))
        run(body_outcome(mode, RawUpstream(gzip.compress(data, 1), [(b"content-encoding", b"gzip")], chunks=2)))


async def body_outcome(mode: tuple[str, str], upstream: RawUpstream) -> Outcome:
    """The response is one of three outcomes, and says which: checked (200, every item shown decided
    and explained), refused (closed mode: 502 problem+json saying why, nothing of the body), or passed
    through as it came (open mode marked `Guardrail-Degraded: 1`, and shadow mode)."""
    middleware = BODY_APPS[mode]
    middleware.app = upstream
    outcome = outcome_of(await call(middleware, http_scope("/recommendations", headers=ALICE)))
    if b"content-length" in outcome.headers:
        assert int(outcome.headers[b"content-length"]) == len(outcome.body)
    enforce, closed = mode[0] == "enforce", mode[1] == "closed"
    if outcome.status == 502:
        assert enforce and closed, "only closed mode refuses a body"
        assert outcome.headers[b"content-type"] == b"application/problem+json"
        assert outcome.headers[b"guardrail-degraded"] == b"1"
        problem = orjson.loads(outcome.body)
        assert problem["status"] == 502
        assert problem["detail"].startswith("The recommendation service sent a response the guardrail could not check")
        assert upstream.body not in outcome.body or len(upstream.body) < 8
        return outcome
    assert outcome.status == 200, outcome
    if outcome.headers.get(b"guardrail-degraded") == b"1" or not enforce:
        assert outcome.body == upstream.body, "passed through as it came"
        assert not (enforce and closed), "closed mode never passes a body it could not check"
        return outcome
    document = decoded(outcome)
    shown = document if isinstance(document, list) else document["items"]
    decision = outcome.headers[b"guardrail-decision"].decode()
    for entry in shown:
        # The caller (alice) can ask about each kept item: its link, unless its id is a dot segment.
        linked = entry["id"] not in (".", "..")
        assert set(entry["explanation"]) == {"text", "because", "controls", *(("why",) if linked else ())}
        if linked:
            assert entry["explanation"]["why"] == f"/guardrail/why/{decision}/{segment(entry['id'])}"
    if isinstance(document, dict):
        assert document["guardrail"]["kept"] == len(shown)
    await _assert_receipt_readable(middleware, outcome)
    return outcome


async def _assert_receipt_readable(middleware: GuardrailMiddleware, outcome: Outcome) -> None:
    """Whatever the upstream sent, the user can read the receipt of the decision and the controls page."""
    decision = outcome.headers[b"guardrail-decision"].decode()
    receipt = outcome_of(await call(middleware, http_scope(f"/guardrail/v1/decisions/{decision}", headers=ALICE)))
    assert receipt.status == 200, receipt
    page = outcome_of(await call(middleware, http_scope("/guardrail/controls", headers=ALICE)))
    assert page.status == 200, page


# -- running coroutines from the synchronous targets -----------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on one event loop for the whole fuzzing session (the middlewares' stores live on it)."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coroutine)


TARGETS = {"tc_string": tc_string, "request_headers": request_headers, "upstream_body": upstream_body}
