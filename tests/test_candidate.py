"""A candidate policy beside the live one, and cases recorded for `guardrail diff`, as an integrator
mounts them: sampled after the response, counted, written without user ids, and bounded."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from guardrail import GuardrailMiddleware
from guardrail.errors import PolicyError
from guardrail.policy.loading import policy_from_mapping
from guardrail.policy.models import Policy
from tests.conftest import BASE_POLICY, make_policy
from tests.upstream import DEFAULT_ITEMS, call, http_scope, item

MERGE = {"content-type": "application/merge-patch+json"}
ITEMS = [*DEFAULT_ITEMS, item("f1", ["health.fitness"], ["location_precise"]), item("d1", ["dating"], [])]


def candidate_data() -> dict[str, Any]:
    """Stricter than the live policy: lower thresholds, and sports become sensitive."""
    data = copy.deepcopy(BASE_POLICY)
    data["policy_id"] = "candidate"
    data["invasiveness"] = {**data["invasiveness"], "discreet_at": 10, "hide_at": 40}
    data["categories"]["sports"] = {"sensitive": True, "label": {"en": "sports", "ko": "스포츠"}}
    return data


def candidate_policy() -> Policy:
    return policy_from_mapping(candidate_data(), source="candidate")


async def echoing_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """A recommendation service that, like the demo's, names the user it recommended for."""
    user = dict(scope["headers"]).get(b"x-user-id", b"").decode()
    body: Any = ITEMS if scope["path"] == "/list" else {"user": user, "for": {"name": user}, "items": ITEMS}
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


def mounted(tmp_path: Path, registry: CollectorRegistry, **options: Any) -> GuardrailMiddleware:
    return GuardrailMiddleware(echoing_upstream, policy=make_policy(), registry=registry, **options)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def changes(registry: CollectorRegistry) -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "guardrail_candidate_changes_total":
                found[sample.labels["live"], sample.labels["candidate"]] += int(sample.value)
    return found


async def traffic(client: httpx.AsyncClient) -> int:
    """Requests from users in different states; the number of guarded pages whose items were decided
    on the personalized route (the non-personalized one is not sampled)."""
    for user, controls in {
        "alice": {"consent": {"personalization": "granted"}},
        "carol": {"consent": {"personalization": "granted"}, "muted": {"movies": {"until": None}}},
        "dave": {"consent": {"personalization": "granted"}, "sensitive": {"dating": True}},
        "erin": {"consent": {"personalization": "granted", "sharing": "granted"}, "signals": {"watch_history": False}},
    }.items():
        response = await client.patch(
            "/guardrail/v1/controls", headers={"x-user-id": user, **MERGE}, content=orjson.dumps(controls)
        )
        assert response.status_code == 200, response.text
    pages = 0
    for headers in (
        {"x-user-id": "alice"},
        {"x-user-id": "alice", "sec-gpc": "1"},
        {"x-user-id": "carol", "accept-language": "ko"},
        {"x-user-id": "dave"},
        {"x-user-id": "erin"},
        {"x-user-id": "mallory", "x-user-age": "15"},
        {"x-user-id": "bob"},  # never changed anything: consent denied, the non-personalized route
    ):
        response = await client.get("/recommendations", headers=headers)
        assert response.status_code == 200, response.text
        pages += response.json().get("user") != ""  # the non-personalized route gets nobody's id
        response = await client.get("/list", headers=headers)
        assert response.status_code == 200, response.text
        pages += 1
    response = await client.get("/list")  # anonymous
    assert response.status_code == 200
    return pages + 1


def guardrail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardrail.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_candidate_counts_what_guardrail_diff_says_of_the_recorded_cases(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    cases = tmp_path / "cases.jsonl"
    middleware = mounted(
        tmp_path, registry, candidate=candidate_policy(), candidate_rate=1.0, record_cases=cases, record_rate=1.0
    )
    transport = httpx.ASGITransport(app=middleware, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        pages = await traffic(client)
    await middleware.runtime.close()  # what a lifespan shutdown does: the queue worked off, the file written

    lines = cases.read_text().splitlines()
    assert len(lines) == pages
    counted = changes(registry)
    assert sum(counted.values()) > 0, "the candidate changes nothing: the cross-check would prove little"
    items = value(registry, "guardrail_candidate_items_total", route="/recommendations") + value(
        registry, "guardrail_candidate_items_total", route="/list"
    )
    assert items == pages * len(ITEMS)

    live = tmp_path / "live.yaml"
    live.write_text(yaml.safe_dump(BASE_POLICY, allow_unicode=True), encoding="utf-8")
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(yaml.safe_dump(candidate_data(), allow_unicode=True), encoding="utf-8")
    run = guardrail("diff", str(live), str(candidate), str(cases), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["skipped"] == []
    assert (report["requests"], report["items"]) == (pages, items)
    said: Counter[tuple[str, str]] = Counter()
    for change in report["changes"]:
        said[change["from"], change["to"]] += change["count"]
    assert said == counted


async def test_recorded_cases_name_no_user(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    middleware = mounted(tmp_path, CollectorRegistry(), record_cases=cases, record_rate=1.0)
    transport = httpx.ASGITransport(app=middleware, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await traffic(client)
    await middleware.runtime.close()

    text = cases.read_text()
    for user in ("alice", "carol", "dave", "erin", "mallory", "bob"):
        assert user not in text
    recorded = [json.loads(line) for line in text.splitlines()]
    assert all("user" not in case and "user" not in case.get("controls", {}) for case in recorded)
    named = [case for case in recorded if case["route"] == "/recommendations"]
    assert named and all(case["body"]["user"] == "<user>" == case["body"]["for"]["name"] for case in named)
    carol = next(case for case in recorded if case["request"]["accept_language"] == "ko")
    assert carol["controls"]["muted"] == {"movies": {"until": None}}
    assert set(carol) == {"controls", "request", "route", "body"}
    assert {"revision", "updated_at"}.isdisjoint(carol["controls"])
    gpc = [case for case in recorded if case["request"]["gpc"]]
    assert len(gpc) == 2
    minor = [case for case in recorded if case["request"]["age"] == 15]
    assert [case["route"] for case in minor] == ["/list"]  # a minor's /recommendations is the non-personalized one
    anonymous = recorded[-1]
    assert anonymous["anonymous"] is True and "controls" not in anonymous
    assert anonymous["route"] == "/list" and anonymous["body"] == ITEMS


async def test_a_rate_of_zero_records_and_evaluates_nothing(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    cases = tmp_path / "cases.jsonl"
    middleware = mounted(
        tmp_path, registry, candidate=candidate_policy(), candidate_rate=0.0, record_cases=cases, record_rate=0.0
    )
    transport = httpx.ASGITransport(app=middleware, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await traffic(client)
    await middleware.runtime.close()
    assert cases.read_text() == ""
    assert value(registry, "guardrail_candidate_items_total", route="/list") == 0
    assert not changes(registry)


async def test_a_full_queue_drops_and_counts_rather_than_waits(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    middleware = mounted(tmp_path, registry, candidate=candidate_policy(), candidate_rate=1.0)
    sampler = middleware.runtime.sampler
    assert sampler is not None
    sampler.limit = 5
    # Each request runs to its end without giving the event loop a turn (nothing in it waits on I/O), so
    # the worker, which runs between turns, cannot run until they are all answered.
    for _ in range(12):
        sent = await call(middleware, http_scope("/list", headers=[(b"x-user-id", b"alice")]))
        assert sent[0]["status"] == 200
    assert len(sampler.queue) == 5
    assert value(registry, "guardrail_candidate_dropped_total") == 7
    assert value(registry, "guardrail_candidate_items_total", route="/list") == 0
    for _ in range(10):
        await asyncio.sleep(0)  # turns of the loop: the worker takes one request per turn
    assert not sampler.queue
    assert value(registry, "guardrail_candidate_items_total", route="/list") == 5 * len(ITEMS)


def test_a_candidate_that_does_not_load_is_refused_with_every_problem(tmp_path: Path) -> None:
    broken = candidate_data()
    broken["mode"] = "audit"
    broken["invasiveness"]["hide_at"] = "high"
    path = tmp_path / "candidate.yaml"
    path.write_text(yaml.safe_dump(broken, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError) as refused:
        mounted(tmp_path, CollectorRegistry(), candidate=path)
    report = refused.value.report()
    assert report.startswith(f"{path}: 2 problems")
    assert "mode: got 'audit'" in report and "invasiveness.hide_at" in report
    with pytest.raises(ValueError, match="candidate_rate is a share of requests, from 0 to 1"):
        mounted(tmp_path, CollectorRegistry(), candidate=candidate_policy(), candidate_rate=1.5)


async def test_a_reload_keeps_the_candidate_and_it_can_be_stopped(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    middleware = mounted(tmp_path, registry, candidate=candidate_policy(), candidate_rate=1.0)
    middleware.use_policy(make_policy(policy_id="second"))
    assert middleware.candidate is not None and middleware.candidate.policy_id == "candidate"
    transport = httpx.ASGITransport(app=middleware, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/list", headers={"x-user-id": "alice"})).status_code == 200
        await asyncio.sleep(0)
        assert value(registry, "guardrail_candidate_items_total", route="/list") == len(ITEMS)
        middleware.use_candidate(None)
        assert middleware.candidate is None and middleware.runtime.sampler is None
        assert (await client.get("/list", headers={"x-user-id": "alice"})).status_code == 200
        await asyncio.sleep(0)
        assert value(registry, "guardrail_candidate_items_total", route="/list") == len(ITEMS)


async def test_a_reviewers_block_is_no_difference_between_live_and_candidate(tmp_path: Path) -> None:
    from guardrail.review import ReviewDecision

    registry = CollectorRegistry()
    middleware = mounted(tmp_path, registry, candidate=make_policy(policy_id="same"), candidate_rate=1.0)
    block = ReviewDecision(0.0, "staff-1", "e-m1", "reported_item", "m1", "block", "abusive")
    await middleware.store.review_queue().decide(block)
    transport = httpx.ASGITransport(app=middleware, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/list", headers={"x-user-id": "alice"})
        assert "m1" not in [entry["id"] for entry in response.json()]
        await asyncio.sleep(0)
    assert value(registry, "guardrail_candidate_items_total", route="/list") == len(ITEMS)
    assert changes(registry) == Counter()
