"""`guardrail simulate` as a user runs it (a subprocess, real files), held byte for byte against the middleware
itself: the same policy and body served by a `GuardrailMiddleware` in front of an upstream, for a user who sets
their controls through the controls API and asks with the headers a browser sends."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from guardrail import GuardrailMiddleware
from guardrail.policy.loading import load_policy
from guardrail.policy.models import Identity
from tests.conftest import ROOT
from tests.upstream import answer_lifespan

DEMO = ROOT / "config" / "guardrail.yaml"
VIDEO = ROOT / "config" / "examples" / "video-streaming.yaml"
TCF = ROOT / "tests" / "data" / "tcf"
# Consents to TCF purposes 1 to 10, made in 2020 (before TCF policy version 4 was required).
TC_STRING = json.loads((TCF / "gguridi-v2-consent_b.json").read_text())["consent"]

DEMO_BODY = {
    "items": [
        {"id": "m1", "categories": ["movies"], "signals": ["watch_history"]},
        {"id": "s1", "categories": ["sports.soccer"], "signals": ["watch_history"]},
        {"id": "p1", "categories": ["movies.action"], "signals": ["third_party"]},
        {"id": "h1", "categories": ["health.pregnancy"], "signals": ["search_history"]},
        {"id": "g1", "categories": ["gambling"]},
        {"id": "t1", "categories": ["television"], "signals": ["location_precise"]},
    ],
    "page": {"next": "/recommendations?page=2", "note": "한국어 ü"},
}
VIDEO_BODY = {
    "titles": [
        {"title_id": 7, "genres": ["drama.medical"], "based_on": ["watch_history"]},
        {"title_id": 8, "genres": ["health.mental_health"], "based_on": ["ratings"]},
        {"title_id": 9, "genres": ["action"], "based_on": ["partner_segments"], "guessed": True},
    ],
    "row": "top-picks",
}
CONSENTED = {"consent": {"personalization": "granted", "ads_sharing": "granted"}}
MUTED = {"consent": {"personalization": "granted"}, "muted": {"sports": {"until": None}}}


def guardrail(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "guardrail.cli", *args], capture_output=True, input=stdin, timeout=60)


def without_decision(body: bytes) -> bytes:
    """The body with its decision id blanked, in the summary and in each item's `why` link."""
    return re.sub(rb"/why/[0-9a-f]+/", b"/why/-/", re.sub(rb'"decision":"[^"]*"', b'"decision":"-"', body))


def upstream_of(body: bytes) -> Any:
    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return upstream


async def served(
    policy_file: Path,
    body: bytes,
    path: str,
    *,
    controls: dict[str, Any] | None = None,
    anonymous: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """What the middleware answers a browser, the user's controls set through its controls API first. The
    identity is a trusted proxy's header, whatever the file says (a JWT needs a key)."""
    policy = load_policy(policy_file)
    policy = policy.model_copy(update={"identity": Identity(header="x-user-id", age_header="x-user-age")})
    app = GuardrailMiddleware(upstream_of(body), policy=policy, store="memory://", registry=CollectorRegistry())
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    sent = dict(headers or {})
    if not anonymous:
        sent["x-user-id"] = "ana"
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        if controls:
            merge = {"x-user-id": "ana", "content-type": "application/merge-patch+json"}
            patched = await client.patch(f"{policy.prefix}/v1/controls", headers=merge, content=orjson.dumps(controls))
            assert patched.status_code == 200, patched.text
        return await client.get(path, headers=sent)


class User(NamedTuple):
    """One user and request: simulate's arguments, and the same as the middleware sees them."""

    name: str
    arguments: list[str]
    controls: dict[str, Any] | None = None
    anonymous: bool = False
    headers: dict[str, str] | None = None
    policy: Path = DEMO
    path: str = "/recommendations"


ROWS, PICKS, BECAUSE = "/api/v2/home/rows/", "/api/v2/home/rows/top-picks", "/api/v2/because-you-watched"
KOREAN = "ko-KR,ko;q=0.9"
USERS = [
    User("consented", [], CONSENTED),
    User("muted topic", [], MUTED),
    User("defaults", []),
    User("anonymous", ["--anonymous"], anonymous=True),
    User("gpc", ["--gpc"], CONSENTED, headers={"sec-gpc": "1"}),
    User("minor", ["--age", "15"], CONSENTED, headers={"x-user-age": "15"}),
    User("korean", ["--accept-language", KOREAN], MUTED, headers={"accept-language": KOREAN}),
    User("tc cookie", ["--tc", TC_STRING], headers={"cookie": f"euconsent-v2={TC_STRING}"}),
    User("tc header", ["--tc", TC_STRING], headers={"x-tc-string": TC_STRING}, policy=VIDEO, path=ROWS),
    User("prefix route", ["--route", ROWS + "*"], {"consent": {"personalization": "granted"}}, policy=VIDEO, path=ROWS),
    User("a path under a prefix", ["--route", PICKS, "--accept-language", "en"], headers={"accept-language": "en"},
         controls={"consent": {"personalization": "granted"}}, policy=VIDEO, path=PICKS),
    User("rewritten", ["--route", BECAUSE], policy=VIDEO, path=BECAUSE),
]  # fmt: skip


@pytest.mark.parametrize("user", USERS, ids=[user.name for user in USERS])
async def test_simulate_prints_what_the_middleware_sends(tmp_path: Path, user: User) -> None:
    body = VIDEO_BODY if user.policy == VIDEO else DEMO_BODY
    raw = json.dumps(body, ensure_ascii=False, indent=1).encode()  # the upstream's own spacing and escapes
    (tmp_path / "body.json").write_bytes(raw)
    arguments = user.arguments
    if user.controls is not None:
        (tmp_path / "controls.json").write_text(json.dumps(user.controls))
        arguments = [*arguments, "--controls", str(tmp_path / "controls.json")]
    run = guardrail("simulate", "--policy", str(user.policy), *arguments, "--headers", str(tmp_path / "body.json"))
    assert run.returncode == 0, run.stderr.decode()
    assert run.stderr == b""
    head, printed = run.stdout.split(b"\n\n", 1)

    expected = await served(
        user.policy, raw, user.path, controls=user.controls, anonymous=user.anonymous, headers=user.headers
    )
    assert without_decision(printed) == without_decision(expected.content)
    assert json.loads(printed)["guardrail"]["decision"] != "-"
    status, *lines = head.decode().split("\n")
    assert status == f"HTTP {expected.status_code} {expected.reason_phrase}"
    shown = dict(line.split(": ", 1) for line in lines)
    assert shown.keys() == {name.title() for name in expected.headers if name.startswith("guardrail-")}
    assert shown["Guardrail-Hidden"] == expected.headers["guardrail-hidden"]
    assert shown["Guardrail-Decision"] == json.loads(printed)["guardrail"]["decision"]


def test_the_users_differ_as_the_policy_says(tmp_path: Path) -> None:
    """The byte-equality above is held on pages that differ: each user's page is their own."""
    (tmp_path / "body.json").write_text(json.dumps(DEMO_BODY))
    (tmp_path / "consented.json").write_text(json.dumps(CONSENTED))
    (tmp_path / "muted.json").write_text(json.dumps(MUTED))

    def kept(*arguments: str) -> list[str]:
        run = guardrail("simulate", "--policy", str(DEMO), *arguments, str(tmp_path / "body.json"))
        assert run.returncode == 0, run.stderr.decode()
        return [item["id"] for item in json.loads(run.stdout)["items"]]

    consented = kept("--controls", str(tmp_path / "consented.json"))
    assert "m1" in consented and "s1" in consented and "p1" in consented
    assert "s1" not in kept("--controls", str(tmp_path / "muted.json"))
    assert "p1" not in kept("--controls", str(tmp_path / "consented.json"), "--gpc")
    assert "m1" not in kept("--anonymous")


def test_controls_saved_from_the_controls_api_are_taken_as_they_are_shown(tmp_path: Path) -> None:
    shown = {"user": "alice", "personalization": True, **MUTED, "revision": 7, "updated_at": "2026-11-26T09:00:00Z"}
    (tmp_path / "shown.json").write_text(json.dumps(shown))
    (tmp_path / "muted.json").write_text(json.dumps(MUTED))
    (tmp_path / "body.json").write_text(json.dumps(DEMO_BODY))
    runs = [
        guardrail("simulate", "--policy", str(DEMO), "--controls", str(tmp_path / name), str(tmp_path / "body.json"))
        for name in ("shown.json", "muted.json")
    ]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr.decode()
    assert without_decision(runs[0].stdout) == without_decision(runs[1].stdout)


def test_shadow_mode_prints_the_body_as_it_came(tmp_path: Path) -> None:
    policy = tmp_path / "shadow.yaml"
    policy.write_text(DEMO.read_text().replace("mode: enforce", "mode: shadow", 1))
    raw = b'{ "items" : [ {"id": "s1", "categories": ["sports"], "signals": ["watch_history"]} ],\n "x": 1.50 }'
    run = guardrail("simulate", "--policy", str(policy), "--headers", "-", stdin=raw)
    assert run.returncode == 0, run.stderr.decode()
    head, printed = run.stdout.split(b"\n\n", 1)
    assert printed == raw
    assert b"Guardrail-Mode: shadow" in head and b"Guardrail-Hidden: 1" in head


@pytest.mark.parametrize(
    ("body", "why"),
    [(b"<html>not JSON</html>", b"not valid JSON"), (b'{"results": []}', b"nothing at the items pointer")],
    ids=["not JSON", "no items list"],
)
async def test_a_body_the_middleware_cannot_check_prints_its_502_and_says_so(
    tmp_path: Path, body: bytes, why: bytes
) -> None:
    (tmp_path / "body").write_bytes(body)
    run = guardrail("simulate", "--policy", str(DEMO), "--headers", str(tmp_path / "body"))
    assert run.returncode == 0, run.stderr.decode()
    head, printed = run.stdout.split(b"\n\n", 1)
    assert head.startswith(b"HTTP 502 Bad Gateway\n") and b"Guardrail-Degraded: 1" in head
    expected = await served(DEMO, body, "/recommendations")
    assert expected.status_code == 502
    assert without_decision(printed) == without_decision(expected.content)
    assert b"could not check BODY" in run.stderr and why in run.stderr and b"replaced by a 502" in run.stderr


def test_in_open_fail_mode_an_unchecked_body_is_printed_as_it_came(tmp_path: Path) -> None:
    policy = tmp_path / "open.yaml"
    policy.write_text(DEMO.read_text().replace("fail_mode: closed", "fail_mode: open", 1))
    run = guardrail("simulate", "--policy", str(policy), "-", stdin=b"[1, 2")
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout == b"[1, 2"
    assert b"could not check BODY" in run.stderr and b"passed through unchecked" in run.stderr


@pytest.mark.parametrize(
    ("arguments", "controls", "said"),
    [
        (["--policy", "missing.yaml"], None, "missing.yaml"),
        (["--policy", str(DEMO), "--route", "/nowhere"], None, "the policy has no route '/nowhere'"),
        (["--policy", str(DEMO)], "{not json", "--controls"),
        (["--policy", str(DEMO)], '{"consent": {"nosuch": "granted"}}', "--controls: "),
        (["--policy", str(DEMO), "--anonymous", "--age", "12"], None, "an anonymous caller has no age"),
        (["--policy", str(DEMO), "--age", "-3"], None, "age"),
    ],
    ids=["policy", "route", "controls not JSON", "controls", "anonymous age", "negative age"],
)
def test_bad_inputs_exit_1_naming_the_problem(
    tmp_path: Path, arguments: list[str], controls: str | None, said: str
) -> None:
    (tmp_path / "body.json").write_text(json.dumps(DEMO_BODY))
    if controls is not None:
        (tmp_path / "c.json").write_text(controls)
        arguments = [*arguments, "--controls", str(tmp_path / "c.json")]
    run = guardrail("simulate", *arguments, str(tmp_path / "body.json"))
    assert run.returncode == 1
    assert said in run.stderr.decode()
    assert run.stdout == b""
    assert b"Traceback" not in run.stderr


def test_a_missing_body_file_exits_1(tmp_path: Path) -> None:
    run = guardrail("simulate", "--policy", str(DEMO), str(tmp_path / "nothing.json"))
    assert run.returncode == 1
    assert b"nothing.json" in run.stderr and b"Traceback" not in run.stderr


def test_a_policy_that_does_not_load_lists_its_errors(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text("version: 1\npolicy_id: x\n")
    run = guardrail("simulate", "--policy", str(policy), "-", stdin=b"{}")
    assert run.returncode == 1
    assert b"broken.yaml" in run.stderr and b"purposes" in run.stderr and b"Traceback" not in run.stderr


async def test_a_tc_string_goes_where_the_policy_reads_it_a_query_parameter(tmp_path: Path) -> None:
    policy = tmp_path / "query.yaml"
    policy.write_text(DEMO.read_text().replace("tcf: {cookie: euconsent-v2,", "tcf: {cookie: null, query: gdpr,", 1))
    raw = json.dumps(DEMO_BODY).encode()
    run = guardrail("simulate", "--policy", str(policy), "--tc", TC_STRING, "-", stdin=raw)
    assert run.returncode == 0, run.stderr.decode()
    expected = await served(policy, raw, f"/recommendations?gdpr={TC_STRING}")
    assert without_decision(run.stdout) == without_decision(expected.content)
    without = await served(policy, raw, "/recommendations")
    assert without_decision(run.stdout) != without_decision(without.content)  # the TC string counted


def test_a_tc_string_for_a_policy_that_reads_none_exits_1(tmp_path: Path) -> None:
    policy = tmp_path / "no-tcf.yaml"
    policy.write_text(DEMO.read_text().replace("tcf: {cookie: euconsent-v2,", "tcf: {cookie: null,", 1))
    run = guardrail("simulate", "--policy", str(policy), "--tc", TC_STRING, "-", stdin=b"{}")
    assert run.returncode == 1
    assert b"the policy reads no TC string" in run.stderr and b"Traceback" not in run.stderr
