"""A worker moves its start-up heap out of the cycle collector's walk, so full collections stay short."""

from __future__ import annotations

import gc
import signal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import guardrail.logs
from guardrail.sidecar import build_sidecar, create_app
from tests.sidecar.servers import RecordingUpstream, write_policy


def walked(target: object) -> bool:
    """Whether a full collection would visit `target`."""
    return any(candidate is target for candidate in gc.get_objects())


async def test_startup_freezes_what_the_process_made_so_far(tmp_path: Path, upstream: RecordingUpstream) -> None:
    app = build_sidecar(write_policy(tmp_path / "policy.yaml"), upstream.url, registry=CollectorRegistry())
    app.freeze_heap = True
    policy = app.middleware.policy
    assert walked(app.middleware)
    try:
        await app.startup(sighup=False)
        assert gc.get_freeze_count() > 0
        assert not walked(app.middleware)
        assert not walked(policy)
        await app.shutdown()
    finally:
        gc.unfreeze()  # the rest of the test run collects as usual


async def test_an_app_built_for_a_caller_leaves_their_heap_alone(tmp_path: Path, upstream: RecordingUpstream) -> None:
    app = build_sidecar(write_policy(tmp_path / "policy.yaml"), upstream.url, registry=CollectorRegistry())
    await app.startup(sighup=False)
    try:
        assert walked(app.middleware)
    finally:
        await app.shutdown()


def test_a_worker_process_freezes(tmp_path: Path, upstream: RecordingUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_CONFIG", str(write_policy(tmp_path / "policy.yaml")))
    monkeypatch.setenv("GUARDRAIL_UPSTREAM", upstream.url)
    monkeypatch.setenv("GUARDRAIL_STORE", "memory://")
    monkeypatch.setattr(guardrail.logs, "configure_logging", lambda: None)  # the test run's logging stays
    previous = signal.getsignal(signal.SIGHUP)
    try:
        assert create_app().freeze_heap
    finally:
        signal.signal(signal.SIGHUP, previous)
