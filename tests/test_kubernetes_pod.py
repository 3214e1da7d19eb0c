"""deploy/kubernetes/'s pod without a cluster: its two containers' commands run here, with the guardrail
container's environment, the ConfigMap written into a directory the way the kubelet writes it, and the
Secret's Redis URL pointing at a real redis-server; then what the kubelet and Prometheus would do.

Only what a test machine must change is changed (as in tests/test_dockerfile.py): the ports (free ones,
not 8000, 8080 and 9090), the ConfigMap's mount path (a temporary directory) and PATH.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.kubelet import project
from tests.manifests import Deploy, option
from tests.sidecar.servers import DEADLINE, free_port, wait_for
from tests.store.redis_servers import RedisServer
from tests.test_kubernetes import SECRET, container_env

USER = {"x-user-id": "alice", "connection": "close"}


@contextmanager
def running(command: list[str], env: dict[str, str], log: IO[str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(DEADLINE)


def get(url: str) -> httpx.Response:
    return httpx.get(url, headers=USER, timeout=10)


def answers(url: str) -> bool:
    try:
        return get(url).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def test_the_pod_serves_probes_metrics_and_an_updated_policy(tmp_path: Path, redis_url: str) -> None:
    deploy = Deploy.load()
    app_command = deploy.container("app")["command"]
    guardrail_command = deploy.guardrail_command()
    ports = {
        option(app_command, "--port"): str(free_port()),
        str(deploy.port("guardrail", "http")): str(free_port()),
        str(deploy.port("guardrail", "metrics")): str(free_port()),
    }
    (mount,) = [m for m in deploy.container("guardrail")["volumeMounts"] if m["mountPath"] == "/etc/guardrail"]
    volume = tmp_path / "etc-guardrail"
    project(volume, deploy.objects["ConfigMap"]["data"])

    def here(argument: str) -> str:
        for port, free in ports.items():
            argument = re.sub(rf"\b{port}\b", free, argument)
        return argument.replace(mount["mountPath"], str(volume))

    env = {name: value for name, value in os.environ.items() if not name.startswith(("GUARDRAIL_", "PROMETHEUS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env.update(container_env(deploy.container("guardrail"), {**SECRET, "store": redis_url}))
    http = f"http://127.0.0.1:{ports[str(deploy.port('guardrail', 'http'))]}"
    metrics = f"http://127.0.0.1:{ports[str(deploy.port('guardrail', 'metrics'))]}"
    guardrail_container = deploy.container("guardrail")
    probes = {name: guardrail_container[name]["httpGet"]["path"] for name in ("livenessProbe", "readinessProbe")}

    with (
        (tmp_path / "pod.log").open("w") as log,
        running([here(argument) for argument in app_command], env, log) as app,
        running([here(argument) for argument in guardrail_command], env, log) as guardrail,
    ):
        wait_for(lambda: answers(http + probes["readinessProbe"]), "the readiness probe passing")
        assert get(http + probes["livenessProbe"]).status_code == 200
        ready = get(http + probes["readinessProbe"]).json()
        assert (ready["store"], ready["upstream"], ready["policy"]) == ("ok", "ok", "demo-2026-11")

        # Through the Service's port: the demo app's recommendations, checked by the ConfigMap's policy.
        answer = get(f"{http}/recommendations")
        assert answer.status_code == 200
        assert answer.json()["guardrail"]["policy"] == "demo-2026-11"
        assert answer.json()["items"]
        # Prometheus scrapes the annotated port; the Service's port does not serve the guardrail's metrics.
        assert 'guardrail_policy_info{policy="demo-2026-11"} 1.0' in httpx.get(f"{metrics}/metrics", timeout=10).text
        public = httpx.get(f"{http}/metrics", timeout=10)
        assert public.status_code == 404
        assert "guardrail_" not in public.text

        # kubectl apply of a changed ConfigMap: the kubelet swaps the files, --watch reloads.
        changed = deploy.policy_text().replace("policy_id: demo-2026-11", "policy_id: demo-2026-12")
        project(volume, {"guardrail.yaml": changed})
        wait_for(lambda: get(f"{http}/recommendations").json()["guardrail"]["policy"] == "demo-2026-12", "the reload")

        # The app stops: the pod is no longer ready, so the Service stops sending it requests.
        app.send_signal(signal.SIGTERM)
        app.wait(DEADLINE)
        assert get(http + probes["readinessProbe"]).status_code == 503
        assert get(http + probes["livenessProbe"]).status_code == 200  # alive: no restart for that

        guardrail.send_signal(signal.SIGTERM)  # the kubelet, after the preStop sleep
        assert guardrail.wait(DEADLINE) in (0, -signal.SIGTERM)
    text = (tmp_path / "pod.log").read_text(encoding="utf-8")
    assert "Traceback" not in text, text
    assert "policy reloaded: demo-2026-12 is live" in text
