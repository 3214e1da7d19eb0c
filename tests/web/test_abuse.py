"""What a user sends cannot make the guardrail misbehave (issue 8): oversized and deeply nested changes,
thousands of muted topics and look-alike names are refused with a clear 4xx; control characters and
markup are refused or stored inertly, and never come back unescaped in an explanation, the page, a
problem detail or a log line. The per-user change limit holds throughout.

Limits (docs/api.md, Abuse limits): a change is at most 64 KiB (413); JSON nests at most 1024 levels (400);
a map of a change names at most as many keys as the policy defines for it (422), so a user mutes at most
every category of the policy; a refused change lists at most 10 problems, each name quoted to 64 characters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.controls import MAX_PROBLEMS_LISTED
from guardrail.logs import JsonFormatter
from guardrail.web.controls_api import MAX_PATCH_BYTES
from tests.conftest import BASE_POLICY, ClientFactory, make_policy
from tests.upstream import Upstream, item

CONTROLS = "/guardrail/v1/controls"
ALICE = {"x-user-id": "alice"}
MERGE = {**ALICE, "content-type": "application/merge-patch+json"}
CATEGORIES = sorted(BASE_POLICY["categories"])
# Markup, a NUL, a right-to-left override and a zero-width space: what must never come back raw.
EVIL = '<script>alert("x")</script>\u0000\u202e\u200b'


async def patch(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.patch(CONTROLS, headers={**MERGE, **headers}, content=content)


async def revision(client: httpx.AsyncClient) -> int:
    response = await client.get(CONTROLS, headers=ALICE)
    return int(response.json()["revision"])


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status and problem["detail"]
    return problem


def assert_inert(text: str) -> None:
    """Nothing of EVIL as it was: no markup, no invisible character (escaped forms are fine)."""
    assert "<script" not in text and "\u202e" not in text and "\u200b" not in text and "\x00" not in text


# -- size and depth ---------------------------------------------------------------------------------


async def test_a_change_of_64_kib_is_read_and_one_byte_more_is_413(client: httpx.AsyncClient) -> None:
    body = orjson.dumps({"personalization": False})
    exactly = body + b" " * (MAX_PATCH_BYTES - len(body))  # JSON allows trailing blanks
    assert (await patch(client, exactly)).status_code == 200
    problem = assert_problem(await patch(client, exactly + b" "), 413)
    assert f"at most {MAX_PATCH_BYTES} bytes" in problem["detail"]
    assert await revision(client) == 1


async def test_an_oversized_change_without_content_length_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"muted": {'
        for n in range(20_000):  # never ends before the limit: the body is refused while it streams
            yield b'"t%d": null,' % n

    response = await client.patch(CONTROLS, headers=MERGE, content=chunks())
    assert_problem(response, 413)
    assert await revision(client) == 0


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        pytest.param(b"[" * 1025 + b"]" * 1025, 400, "depth limit exceeded", id="1025-levels"),
        pytest.param(b'{"muted": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", 400, "depth limit", id="30000-levels"),
        pytest.param(
            b'{"muted": {"gambling": {"until": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}}}",
            422,
            "muted.gambling.until: must be an ISO 8601 time",
            id="1000-levels-in-a-value",
        ),
        pytest.param(b'{"signals": ' + b'{"a":' * 1020 + b"1" + b"}" * 1021, 422, "signals.a: unknown", id="keys"),
    ],
)
async def test_deeply_nested_changes_are_refused(
    client: httpx.AsyncClient, body: bytes, status: int, says: str
) -> None:
    problem = assert_problem(await patch(client, body), status)
    assert says in problem["detail"]
    assert await revision(client) == 0


# -- many topics, look-alike names ------------------------------------------------------------------


async def test_thousands_of_muted_topics_are_refused_naming_the_cap(client: httpx.AsyncClient) -> None:
    body = orjson.dumps({"muted": {f"t{n}": {"until": None} for n in range(2500)}})
    assert len(body) < MAX_PATCH_BYTES
    response = await patch(client, body)
    problem = assert_problem(response, 422)
    errors = problem["errors"]
    count = len(CATEGORIES)
    assert errors[0] == {
        "field": "muted",
        "message": f"names 2500 entries, but this policy has {count} categories: name at most {count}",
    }
    # The answer stays small however many names were sent: ten problems and a count of the rest.
    assert len(errors) == MAX_PROBLEMS_LISTED + 1
    assert errors[-1] == {
        "field": "(more)",
        "message": f"{2501 - MAX_PROBLEMS_LISTED} more problems like these are not listed",
    }
    assert len(response.content) < 4096
    assert await revision(client) == 0


async def test_every_category_can_be_muted_and_no_more(client: httpx.AsyncClient) -> None:
    everything = {"muted": {name: {"until": None} for name in CATEGORIES}}
    assert (await patch(client, everything)).json()["muted"].keys() == set(CATEGORIES)
    # Names outside the policy never reach the store, so a user's mutes are bounded by the policy.
    assert (await patch(client, {"muted": {"astrology": {"until": None}}})).status_code == 422
    assert (await client.get(CONTROLS, headers=ALICE)).json()["muted"].keys() == set(CATEGORIES)


async def test_thousands_of_unknown_fields_get_a_short_answer(client: httpx.AsyncClient) -> None:
    response = await patch(client, {f"field{n}": True for n in range(3000)})
    assert len(assert_problem(response, 422)["errors"]) == MAX_PROBLEMS_LISTED + 1
    assert len(response.content) < 4096


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Gambling", "muted.Gambling"),
        ("GAMBLING", "muted.GAMBLING"),
        ("gambling ", 'muted."gambling "'),
        (" gambling", 'muted." gambling"'),
        ("gambling\t", 'muted."gambling\\t"'),
        ("gambling\u200b", 'muted."gambling\\u200b"'),  # zero-width space
        ("g\u0430mbling", 'muted."g\\u0430mbling"'),  # Cyrillic a
        ("\uff47\uff41\uff4d\uff42\uff4c\uff49\uff4e\uff47", 'muted."\\uff47\\uff41\\uff4d'),  # fullwidth
        ("gambIing", "muted.gambIing"),  # capital i for l
    ],
)
async def test_look_alike_categories_are_refused_showing_the_difference(
    client: httpx.AsyncClient, name: str, shown: str
) -> None:
    problem = assert_problem(await patch(client, {"muted": {name: {"until": None}}}), 422)
    (error,) = problem["errors"]
    assert error["field"].startswith(shown)
    assert error["message"] == ("unknown category (did you mean gambling?); valid: " + ", ".join(CATEGORIES))
    assert await revision(client) == 0


@pytest.mark.parametrize(
    ("body", "field", "meant"),
    [
        ({"signals": {"Watch_History": False}}, "signals.Watch_History", "watch_history"),
        ({"sensitive": {"health ": True}}, 'sensitive."health "', "health"),
        ({"consent": {"personalisation": "granted"}}, "consent.personalisation", "personalization"),
    ],
)
async def test_look_alikes_in_every_map_are_refused(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, meant: str
) -> None:
    (error,) = assert_problem(await patch(client, body), 422)["errors"]
    assert error["field"] == field
    assert f"(did you mean {meant}?)" in error["message"]


# -- control characters and markup ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {EVIL: True},
        {"muted": {EVIL: {"until": None}}},
        {"signals": {EVIL: False}},
        {"consent": {"personalization": EVIL}},
        {"muted": {"gambling": {"until": EVIL}}},
        {"muted": {"gambling": {EVIL: None}}},
        {"locale": EVIL},
        {"locale": "ko\u0000"},
        {"personalization": EVIL},
        {"revision": EVIL},
    ],
)
async def test_markup_and_control_characters_in_a_change_are_refused_inertly(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await patch(client, body)
    assert_problem(response, 422)
    assert_inert(response.text)
    assert await revision(client) == 0


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every guardrail log line, as the JSON formatter writes it."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("guardrail")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_markup_in_headers_query_and_path_never_comes_back_raw(
    client_for: ClientFactory, log_lines: list[str]
) -> None:
    evil_upstream = Upstream(
        body={"items": [item("m1", ["movies", EVIL], ["watch_history", EVIL]), item("s1", [EVIL], [])]}
    )
    client = client_for(GuardrailMiddleware(evil_upstream, policy=make_policy(), registry=CollectorRegistry()))
    raw = EVIL.encode()
    assert (await patch(client, {"consent": {"personalization": "granted"}})).status_code == 200
    headers = [
        (b"x-user-id", b"alice"),
        (b"accept-language", raw),
        (b"sec-gpc", raw),
        (b"cookie", b"euconsent-v2=" + raw),
        (b"x-user-age", raw),
    ]
    responses = [
        await client.get("/recommendations", headers=headers, params={"q": EVIL}),
        await client.get("/guardrail/controls", headers=headers, params={"saved": EVIL}),
        await client.get(CONTROLS, headers=headers, params={EVIL: EVIL}),
        await client.get(f"/guardrail/v1/decisions/{quote(EVIL)}", headers=ALICE),
        await client.get(f"/guardrail/{quote(EVIL)}", headers=ALICE),
    ]
    assert [response.status_code for response in responses] == [200, 200, 200, 404, 404]
    for response in responses[1:]:
        assert_inert(response.text)
    # The upstream's items are its own; what the guardrail adds (explanations, the notice) is the
    # policy's words, whatever the upstream and the user sent.
    shown = responses[0].json()
    assert [entry["id"] for entry in shown["items"]] == ["s1"]
    assert_inert(
        json.dumps([shown["guardrail"], *(entry["explanation"] for entry in shown["items"])], ensure_ascii=False)
    )
    receipt = (await client.get(f"/guardrail/v1/decisions/{shown['guardrail']['decision']}", headers=ALICE)).json()
    assert_inert(json.dumps([entry["text"] for entry in receipt["items"]], ensure_ascii=False))
    # A user id with markup is stored inertly (it is the caller's own), one with control characters is refused.
    own = await client.get(CONTROLS, headers={"x-user-id": "<b>bob</b>"})
    assert own.status_code == 200 and own.json()["user"] == "<b>bob</b>"
    page = await client.get("/guardrail/controls", headers={"x-user-id": "<b>bob</b>"})
    assert page.status_code == 200 and "<b>bob" not in page.text
    assert (await client.get(CONTROLS, headers=[(b"x-user-id", "bob\u202e".encode())])).status_code == 401
    assert log_lines and all(line.isascii() and line.isprintable() for line in log_lines)
    assert not any("alice" in line or "<b>" in line for line in log_lines)


async def test_an_upstream_value_reaches_a_log_line_only_escaped(
    client_for: ClientFactory, log_lines: list[str]
) -> None:
    class OddEncoding(Upstream):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            headers = [(b"content-type", b"application/json"), (b"content-encoding", EVIL.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})

    client = client_for(GuardrailMiddleware(OddEncoding(), policy=make_policy(), registry=CollectorRegistry()))
    response = await client.get("/recommendations", headers=ALICE)
    assert_problem(response, 502)
    assert_inert(response.text)
    (warning,) = [line for line in log_lines if json.loads(line)["level"] == "warning"]
    assert warning.isascii() and warning.isprintable()
    assert "is not supported" in json.loads(warning)["message"]


# -- the change limit holds -------------------------------------------------------------------------


async def test_abusive_changes_count_against_the_rate_limit(client_for: ClientFactory) -> None:
    policy = make_policy(controls_rate_limit="5/minute")
    client = client_for(GuardrailMiddleware(Upstream(), policy=policy, registry=CollectorRegistry()))
    abusive = [
        b"x" * (MAX_PATCH_BYTES + 1),
        b"[" * 5000,
        orjson.dumps({"muted": {f"t{n}": None for n in range(3000)}}),
        orjson.dumps({"muted": {"g\u0430mbling": {"until": None}}}),
        orjson.dumps({EVIL: EVIL}),
    ]
    statuses = [(await patch(client, body)).status_code for body in abusive]
    assert statuses == [413, 400, 422, 422, 422]
    # The limit is reached: a good change and more abuse both wait, told for how long.
    for body in (orjson.dumps({"personalization": False}), abusive[0]):
        refused = await patch(client, body)
        assert_problem(refused, 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert await revision(client) == 0
