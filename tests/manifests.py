"""deploy/kubernetes/ as the tests read it: every manifest, and the pieces of the pod they check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

DIRECTORY = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = DIRECTORY / "kustomization.yaml"
# The Kubernetes versions the manifests are validated against (strict: no unknown fields), here and in
# .ci/run: the oldest the manifests need (a preStop `sleep` action is on by default from 1.30) and the newest
# schema kubernetes-validate bundles at its locked version.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def manifest_files() -> list[Path]:
    return sorted(path for path in DIRECTORY.glob("*.yaml") if path != KUSTOMIZATION)


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


@dataclass
class Deploy:
    """The objects deploy/kubernetes/ defines, one of each kind the tests look at."""

    objects: dict[str, dict[str, Any]]  # kind → the object

    @classmethod
    def load(cls) -> Deploy:
        objects: dict[str, dict[str, Any]] = {}
        for path in manifest_files():
            for document in documents(path):
                assert document["kind"] not in objects, f"one {document['kind']} is expected, {path.name} adds another"
                objects[document["kind"]] = document
        return cls(objects)

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.objects["Deployment"]["spec"]["template"]["spec"]
        return spec

    def container(self, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [container for container in self.pod["containers"] if container["name"] == name]
        assert len(found) == 1, f"the pod has no container named {name}"
        return found[0]

    def port(self, container: str, name: str) -> int:
        ports = {port["name"]: port["containerPort"] for port in self.container(container).get("ports", [])}
        assert name in ports, f"the {container} container has no port named {name}"
        return int(ports[name])

    def policy_text(self) -> str:
        text: str = self.objects["ConfigMap"]["data"]["guardrail.yaml"]
        return text

    def guardrail_command(self) -> list[str]:
        guardrail = self.container("guardrail")
        return [*guardrail.get("command", []), *guardrail.get("args", [])]


def option(command: list[str], name: str) -> str:
    """The value of `--name=value` or `--name value` in `command`."""
    for index, argument in enumerate(command):
        if argument.startswith(f"{name}="):
            return argument.split("=", 1)[1]
        if argument == name:
            return command[index + 1]
    raise AssertionError(f"{name} is not given in {command}")
