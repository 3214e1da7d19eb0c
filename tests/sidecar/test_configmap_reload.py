"""A policy mounted from a Kubernetes ConfigMap: the kubelet never rewrites the file in place, it swaps
the `..data` symlink to a new directory (tests/kubelet.py). `--watch` must notice that swap, and
`guardrail serve --watch` must then serve the new policy (deploy/kubernetes/ relies on it)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.reload import PolicyReloader
from tests.conftest import BASE_POLICY
from tests.kubelet import project
from tests.sidecar.servers import RecordingUpstream, sample, scrape, serve_process, wait_for
from tests.upstream import Upstream

ALICE = {"x-user-id": "alice", "connection": "close"}


def policy_text(**overrides: Any) -> str:
    data = copy.deepcopy(BASE_POLICY)
    data.update(overrides)
    return yaml.safe_dump(data, allow_unicode=True)


def test_a_symlink_swap_reloads_once_per_new_content(tmp_path: Path) -> None:
    mount = tmp_path / "guardrail"
    project(mount, {"guardrail.yaml": policy_text()})
    path = mount / "guardrail.yaml"
    registry = CollectorRegistry()
    middleware = GuardrailMiddleware(Upstream(), policy=path, registry=registry)
    reloader = PolicyReloader(middleware, path)
    assert reloader.poll() is None

    project(mount, {"guardrail.yaml": policy_text(policy_id="second")})
    assert reloader.poll() is True
    assert middleware.policy.policy_id == "second"

    project(mount, {"guardrail.yaml": policy_text(policy_id="second")})  # a new directory, the same content
    assert reloader.poll() is None
    project(mount, {"guardrail.yaml": policy_text(mode="audit")})
    assert reloader.poll() is False  # refused: the live policy stays
    assert middleware.policy.policy_id == "second"
    assert registry.get_sample_value("guardrail_policy_reloads_total", {"result": "success"}) == 1
    assert registry.get_sample_value("guardrail_policy_reloads_total", {"result": "error"}) == 1


def test_serve_watch_serves_the_policy_of_an_updated_configmap(
    tmp_path: Path, upstream_server: RecordingUpstream
) -> None:
    mount = tmp_path / "guardrail"
    project(mount, {"guardrail.yaml": policy_text()})
    config = str(mount / "guardrail.yaml")
    with serve_process("--config", config, "--upstream", upstream_server.url, "--watch") as serve:
        serve.wait_ready()

        def served() -> str:
            response = httpx.get(f"{serve.url}/recommendations", headers=ALICE, timeout=10)
            policy: str = response.json()["guardrail"]["policy"]
            return policy

        assert served() == "test-policy"
        project(mount, {"guardrail.yaml": policy_text(policy_id="from-configmap")})
        wait_for(lambda: served() == "from-configmap", "the updated ConfigMap's policy serving")
        samples = scrape(serve.url)
        assert sample(samples, "guardrail_policy_info", policy="from-configmap") == 1
        assert sample(samples, "guardrail_policy_reloads_total", result="success") == 1
