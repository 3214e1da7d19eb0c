"""Live policy reload in-process (`guardrail.reload`): what a service embedding the middleware gets.
`guardrail serve` runs the same code; tests/sidecar/test_serve.py checks it there, signals included."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from guardrail import GuardrailMiddleware, PolicyError
from guardrail.reload import PolicyReloader, load_or_snapshot
from tests.conftest import ClientFactory
from tests.sidecar.servers import write_policy
from tests.upstream import Upstream

ALICE = {"x-user-id": "alice"}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "policy.yaml")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def reloads(registry: CollectorRegistry, result: str) -> float | None:
    return registry.get_sample_value("guardrail_policy_reloads_total", {"result": result})


def live(registry: CollectorRegistry, policy: str) -> float | None:
    return registry.get_sample_value("guardrail_policy_info", {"policy": policy})


async def policy_becomes(middleware: GuardrailMiddleware, policy_id: str) -> None:
    for _ in range(1000):  # 10 s at most
        if middleware.policy.policy_id == policy_id:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the policy did not become {policy_id}")


async def test_a_valid_policy_swaps_in_and_is_counted(
    client_for: ClientFactory, policy_file: Path, registry: CollectorRegistry
) -> None:
    middleware = GuardrailMiddleware(Upstream(), policy=policy_file, registry=registry)
    reloader = PolicyReloader(middleware, policy_file)
    client = client_for(middleware)
    assert (await client.get("/recommendations", headers=ALICE)).headers["guardrail-mode"] == "enforce"

    write_policy(policy_file, policy_id="second", mode="shadow")
    assert reloader.reload() is True

    response = await client.get("/recommendations", headers=ALICE)
    assert response.headers["guardrail-mode"] == "shadow"
    assert (await client.get("/guardrail/readyz")).json()["policy"] == "second"
    assert reloads(registry, "success") == 1
    assert reloads(registry, "error") == 0
    assert live(registry, "second") == 1
    assert live(registry, "test-policy") is None


async def test_an_invalid_policy_is_refused_logged_and_the_old_one_keeps_serving(
    client_for: ClientFactory, policy_file: Path, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    middleware = GuardrailMiddleware(Upstream(), policy=policy_file, registry=registry)
    reloader = PolicyReloader(middleware, policy_file)
    write_policy(policy_file, policy_id="broken", mode="audit", fail_mode="never")

    with caplog.at_level(logging.ERROR, logger="guardrail"):
        assert reloader.reload() is False

    response = await client_for(middleware).get("/recommendations", headers=ALICE)
    assert response.json()["guardrail"]["policy"] == "test-policy"
    assert reloads(registry, "error") == 1
    assert reloads(registry, "success") == 0
    assert live(registry, "test-policy") == 1
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"policy reload refused, test-policy is still live: {policy_file}: 2 problems"
    )
    assert record.__dict__["problems"] == [
        "mode: got 'audit'; allowed: 'enforce' or 'shadow'",
        "fail_mode: got 'never'; allowed: 'closed' or 'open'",
    ]


async def test_a_request_in_flight_finishes_on_the_policy_it_started_with(
    client_for: ClientFactory, policy_file: Path, registry: CollectorRegistry
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()
    upstream = Upstream()

    async def held(scope: Scope, receive: Receive, send: Send) -> None:
        arrived.set()
        await release.wait()
        await upstream(scope, receive, send)

    middleware = GuardrailMiddleware(held, policy=policy_file, registry=registry)
    reloader = PolicyReloader(middleware, policy_file)
    client = client_for(middleware)
    in_flight = asyncio.create_task(client.get("/recommendations", headers=ALICE))
    await asyncio.wait_for(arrived.wait(), 10)

    write_policy(policy_file, policy_id="second")
    assert reloader.reload() is True
    release.set()

    assert (await in_flight).json()["guardrail"]["policy"] == "test-policy"
    assert (await client.get("/recommendations", headers=ALICE)).json()["guardrail"]["policy"] == "second"


def test_polling_reloads_when_the_content_changes_and_says_a_broken_file_once(
    policy_file: Path, registry: CollectorRegistry
) -> None:
    middleware = GuardrailMiddleware(Upstream(), policy=policy_file, registry=registry)
    reloader = PolicyReloader(middleware, policy_file)
    assert reloader.poll() is None

    os.utime(policy_file, ns=(1, 1))  # touched, same content
    assert reloader.poll() is None
    write_policy(policy_file, policy_id="second")
    assert reloader.poll() is True
    assert middleware.policy.policy_id == "second"

    policy_file.write_text("version: 1\npolicy_id: [not, an, id]\n")
    assert reloader.poll() is False
    os.utime(policy_file, ns=(2, 2))
    assert reloader.poll() is None  # still the same broken content: refused once, not every second
    policy_file.unlink()
    assert reloader.poll() is False  # gone: refused, the live policy stays
    assert reloader.poll() is None
    assert middleware.policy.policy_id == "second"
    assert (reloads(registry, "success"), reloads(registry, "error")) == (1, 2)


async def test_watching_picks_up_a_change(policy_file: Path, registry: CollectorRegistry) -> None:
    middleware = GuardrailMiddleware(Upstream(), policy=policy_file, registry=registry)
    reloader = PolicyReloader(middleware, policy_file, interval=0.02)
    reloader.start_watching()
    try:
        write_policy(policy_file, policy_id="second")
        await policy_becomes(middleware, "second")
    finally:
        reloader.close()
    assert reloads(registry, "success") == 1


async def test_sighup_reloads(policy_file: Path, registry: CollectorRegistry) -> None:
    middleware = GuardrailMiddleware(Upstream(), policy=policy_file, registry=registry)
    reloader = PolicyReloader(middleware, policy_file)
    reloader.install_sighup()
    try:
        write_policy(policy_file, policy_id="second")
        os.kill(os.getpid(), signal.SIGHUP)
        await policy_becomes(middleware, "second")
    finally:
        reloader.close()


def test_a_process_starting_on_a_broken_file_serves_the_last_live_policy(tmp_path: Path) -> None:
    policy_file = write_policy(tmp_path / "policy.yaml")
    snapshot = tmp_path / "snapshot.yaml"
    middleware = GuardrailMiddleware(Upstream(), policy=policy_file, registry=CollectorRegistry())
    reloader = PolicyReloader(middleware, policy_file, snapshot=snapshot)
    write_policy(policy_file, policy_id="second")
    assert reloader.reload() is True
    policy_file.write_text("not: [a, policy")

    with pytest.raises(PolicyError):
        load_or_snapshot(policy_file, None)
    assert load_or_snapshot(policy_file, snapshot).policy_id == "second"
