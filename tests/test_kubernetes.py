"""deploy/kubernetes/: every manifest valid against the Kubernetes API schemas (strict), and consistent with
the project: the serve command listens on the ports the pod declares, the probes ask the policy's prefix,
the ConfigMap's policy loads, the environment names are ones guardrail reads. A broken copy must fail."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

import guardrail
import guardrail.sidecar
from guardrail.cli import main
from guardrail.policy.loading import parse_policy, read_policy_text
from guardrail.settings import Settings
from tests.conftest import ROOT
from tests.manifests import DIRECTORY, KUBERNETES_VERSIONS, KUSTOMIZATION, Deploy, documents, manifest_files, option

CHECK_SCRIPT = ROOT / ".ci" / "kubernetes"
OPERATIONS = ROOT / "docs" / "operations.md"
# What the Secret `guardrail` holds in the test: any values of the right shape.
SECRET = {"store": "redis://redis.example:6379/0", "csrf-key": "c" * 64, "log-key": "l" * 64}


def container_env(container: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet gives it, with the Secret `guardrail` holding `secret`."""
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            reference = entry["valueFrom"]["secretKeyRef"]
            assert reference["name"] == "guardrail", f"{entry['name']}: secrets come from the Secret `guardrail`"
            env[entry["name"]] = secret[reference["key"]]
    return env


def names_guardrail_reads() -> set[str]:
    """The settings class's variables, and every GUARDRAIL_* name the package's code spells out."""
    names = {f"GUARDRAIL_{name.upper()}" for name in Settings.model_fields}
    for path in Path(guardrail.__file__).parent.rglob("*.py"):
        names.update(re.findall(r"\bGUARDRAIL_[A-Z][A-Z0-9_]*\b", path.read_text(encoding="utf-8")))
    return names


def run_check(directory: Path) -> subprocess.CompletedProcess[str]:
    """.ci/kubernetes as CI runs it, with this Python's scripts (kubernetes-validate) first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(CHECK_SCRIPT), str(directory)], env=env, capture_output=True, text=True, check=False, timeout=120
    )


# -- the schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_manifest_is_a_valid_kubernetes_object(path: Path, version: str) -> None:
    for document in documents(path):
        kubernetes_validate.validate(document, version, strict=True)


def _misspell(deployment: dict[str, Any]) -> None:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["imagePulPolicy"] = container.pop("imagePullPolicy")


def _port_as_text(deployment: dict[str, Any]) -> None:
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    port["containerPort"] = str(port["containerPort"])


def _no_selector(deployment: dict[str, Any]) -> None:
    del deployment["spec"]["selector"]


def _misspelled_kind(deployment: dict[str, Any]) -> None:
    deployment["kind"] = "Deploymnet"


def _removed_api(deployment: dict[str, Any]) -> None:
    deployment["apiVersion"] = "extensions/v1beta1"  # removed in Kubernetes 1.16


BREAKAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "a misspelled field": _misspell,
    "a port given as text": _port_as_text,
    "a Deployment without a selector": _no_selector,
    "a misspelled kind": _misspelled_kind,
    "an API Kubernetes removed": _removed_api,
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_deployment_is_refused(breakage: str) -> None:
    broken = copy.deepcopy(Deploy.load().objects["Deployment"])
    BREAKAGES[breakage](broken)
    for version in KUBERNETES_VERSIONS:
        with pytest.raises((kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError)):
            kubernetes_validate.validate(broken, version, strict=True)


def test_the_ci_check_passes_these_manifests_and_fails_broken_copies(tmp_path: Path) -> None:
    versions = re.search(r"^versions=\((.*)\)$", CHECK_SCRIPT.read_text(encoding="utf-8"), re.MULTILINE)
    assert versions is not None and tuple(versions.group(1).split()) == KUBERNETES_VERSIONS
    assert "bash .ci/kubernetes" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    passed = run_check(DIRECTORY)
    assert passed.returncode == 0, passed.stderr

    for old, new in (("imagePullPolicy", "imagePulPolicy"), ("kind: Deployment", "kind: Deploymnet")):
        copied = tmp_path / new.split()[-1]
        shutil.copytree(DIRECTORY, copied)
        deployment = copied / "deployment.yaml"
        deployment.write_text(deployment.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
        failed = run_check(copied)
        assert failed.returncode != 0, f"{new} passed the check"
        assert new.split()[-1] in failed.stderr


def test_the_kustomization_applies_every_manifest() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(path.name for path in manifest_files())


# -- consistency with the project ---------------------------------------------------------------------


def test_the_configmap_holds_the_demo_policy_trusting_the_pod_network() -> None:
    deploy = Deploy.load()
    policy = parse_policy(deploy.policy_text(), source="configmap.yaml")  # every error listed if it fails
    demo = parse_policy(read_policy_text(ROOT / "config" / "guardrail.yaml"), source="config/guardrail.yaml")
    assert policy.model_dump(exclude={"identity"}) == demo.model_dump(exclude={"identity"}), (
        "the ConfigMap's policy is the demo policy for the demo app: copy config/guardrail.yaml's change into it"
    )
    assert policy.identity.trusted_proxies != demo.identity.trusted_proxies  # not loopback: the ingress connects
    assert policy.identity.model_dump(exclude={"trusted_proxies"}) == demo.identity.model_dump(
        exclude={"trusted_proxies"}
    )


def test_the_serve_command_listens_where_the_pod_says(monkeypatch: pytest.MonkeyPatch) -> None:
    deploy = Deploy.load()
    command = deploy.guardrail_command()
    assert command[:2] == ["guardrail", "serve"]
    for name in [name for name in os.environ if name.startswith("GUARDRAIL_")]:
        monkeypatch.delenv(name)
    for name, value in container_env(deploy.container("guardrail"), SECRET).items():
        monkeypatch.setenv(name, value)
    started: dict[str, Any] = {}

    def serve(**settings: Any) -> int:
        started.update(settings)
        return 0

    # The real command line and settings, up to where the server would start.
    monkeypatch.setattr(guardrail.sidecar, "serve", serve)
    assert main(command[1:]) == 0

    annotations = deploy.objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert started["host"] == "0.0.0.0"
    assert started["port"] == deploy.port("guardrail", "http")
    assert started["metrics_port"] == deploy.port("guardrail", "metrics") == int(annotations["prometheus.io/port"])
    assert annotations["prometheus.io/path"] == "/metrics"
    assert started["watch"] is True
    # The policy file is a key of the ConfigMap, in its volume mounted whole (a subPath never updates).
    config = Path(started["config"])
    mounts = {mount["name"]: mount for mount in deploy.container("guardrail")["volumeMounts"]}
    volume = next(volume for volume in deploy.pod["volumes"] if "configMap" in volume)
    assert volume["configMap"]["name"] == deploy.objects["ConfigMap"]["metadata"]["name"]
    assert "subPath" not in mounts[volume["name"]]
    assert config.parent == Path(mounts[volume["name"]]["mountPath"])
    assert config.name in deploy.objects["ConfigMap"]["data"]
    # The upstream is the app container, on the pod's loopback only.
    upstream = urlsplit(started["upstream"])
    app = deploy.container("app")["command"]
    assert upstream.hostname == option(app, "--host") == "127.0.0.1"
    assert upstream.port == int(option(app, "--port"))


def test_the_probes_ask_the_policy_prefix_on_the_guardrail_port() -> None:
    deploy = Deploy.load()
    prefix = parse_policy(deploy.policy_text(), source="configmap.yaml").prefix
    guardrail_container = deploy.container("guardrail")
    expected = {
        "startupProbe": f"{prefix}/healthz",
        "livenessProbe": f"{prefix}/healthz",
        "readinessProbe": f"{prefix}/readyz",
    }
    for probe, path in expected.items():
        check = guardrail_container[probe]["httpGet"]
        assert check["path"] == path, probe
        assert deploy.port("guardrail", check["port"]) == deploy.port("guardrail", "http"), probe


def test_the_service_and_the_budget_reach_the_pods_and_the_guardrail() -> None:
    deploy = Deploy.load()
    labels = deploy.objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deploy.objects["Deployment"]["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget": deploy.objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        "Service": deploy.objects["Service"]["spec"]["selector"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= labels.items(), f"the {kind} does not select the pods"
    (port,) = deploy.objects["Service"]["spec"]["ports"]
    assert deploy.port("guardrail", port["targetPort"]) == deploy.port("guardrail", "http")
    assert (
        deploy.objects["Deployment"]["spec"]["replicas"]
        > deploy.objects["PodDisruptionBudget"]["spec"]["maxUnavailable"]
    )


def test_every_variable_is_one_guardrail_reads_and_secrets_come_from_the_documented_secret() -> None:
    deploy = Deploy.load()
    known = names_guardrail_reads()
    env = deploy.container("guardrail")["env"]
    for entry in env:
        assert entry["name"] in known, f"{entry['name']} is not a variable guardrail reads"
    secret_keys = {entry["valueFrom"]["secretKeyRef"]["key"] for entry in env if "valueFrom" in entry}
    by_name = {entry["name"]: entry for entry in env}
    assert "secretKeyRef" in by_name["GUARDRAIL_STORE"]["valueFrom"], "the Redis URL holds a password: a Secret"
    documented = set(re.findall(r"--from-literal=([a-z-]+)=", OPERATIONS.read_text(encoding="utf-8")))
    assert secret_keys == documented, "docs/operations.md's `kubectl create secret` must make every key used"
    assert deploy.pod["enableServiceLinks"] is False  # no GUARDRAIL_*_PORT=tcp://... from a Service's name


def test_the_containers_run_unprivileged_read_only_and_bounded() -> None:
    deploy = Deploy.load()
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_user is not None
    pod_security = deploy.pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == tuple(map(int, dockerfile_user.groups()))
    for container in deploy.pod["containers"]:
        name = container["name"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), name
        assert "memory" in resources["limits"], name
        assert container["image"] == f"guardrail:{guardrail.__version__}", f"{name}: the image of this release"
