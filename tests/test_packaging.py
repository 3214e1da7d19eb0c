"""What a platform team installs: the distribution's metadata, and lock files in step with pyproject.toml.

The lock files (requirements/*.txt, made by `bash .ci/lock`) are what CI, the image and the benchmarks
install; pyproject.toml keeps the ranges users get. These tests fail when the two drift apart.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import guardrail
from guardrail.optional import DISTRIBUTION
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = ROOT / "requirements"
# The environment the locks are checked in: the one CI's main leg runs.
ENVIRONMENT = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux"}


def pins(lock: str) -> dict[str, Version]:
    """name -> pinned version, for the lines of a lock file that apply on Linux with Python 3.11."""
    found: dict[str, Version] = {}
    for line in (LOCKS / lock).read_text().splitlines():
        if not line or line[0] in " #-":
            continue
        requirement = Requirement(line.rstrip(" \\"))
        if requirement.marker is None or requirement.marker.evaluate(ENVIRONMENT):
            (specifier,) = requirement.specifier
            found[canonical(requirement.name)] = Version(specifier.version)
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(*extras: str) -> list[Requirement]:
    """The direct dependencies of the core install plus `extras`, self-references followed."""
    found = [Requirement(text) for text in PYPROJECT["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PYPROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonical(requirement.name) == DISTRIBUTION:
                pending += requirement.extras
            else:
                found.append(requirement)
    return [r for r in found if r.marker is None or r.marker.evaluate(ENVIRONMENT)]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [
        ("dev.txt", ("dev",)),
        ("test.txt", ("test",)),
        ("runtime.txt", ("redis", "sidecar", "jwt")),
        ("floor.txt", ("redis", "sidecar", "jwt")),
    ],
)
def test_each_lock_pins_every_dependency_within_pyprojects_ranges(lock: str, extras: tuple[str, ...]) -> None:
    pinned = pins(lock)
    for requirement in requirements(*extras):
        name = canonical(requirement.name)
        assert name in pinned, f"{lock} has no pin for {requirement}: run `bash .ci/lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside pyproject.toml's {requirement}: run `bash .ci/lock`"
        )


def test_the_floor_lock_holds_the_lowest_version_pyproject_admits() -> None:
    """So that the floor leg of CI tests what `>=` promises, not something newer."""
    pinned = pins("floor.txt")
    for requirement in requirements("redis", "sidecar", "jwt"):
        (lowest,) = [s.version for s in requirement.specifier if s.operator == ">="]
        assert pinned[canonical(requirement.name)] == Version(lowest), f"{requirement}: run `bash .ci/lock`"


@pytest.mark.parametrize("lock", ["test.txt", "runtime.txt", "build.txt"])
def test_the_smaller_locks_agree_with_the_dev_lock(lock: str) -> None:
    dev = pins("dev.txt")
    for name, version in pins(lock).items():
        assert dev.get(name) == version, f"{lock} pins {name}=={version}, dev.txt {dev.get(name)}: run `bash .ci/lock`"


@pytest.mark.parametrize("lock", ["dev.txt", "test.txt", "runtime.txt", "build.txt", "floor.txt"])
def test_every_pin_carries_hashes(lock: str) -> None:
    text = (LOCKS / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text[text.index("\n", text.index("#    bash .ci/lock")) + 1 :])
    assert entries
    for entry in entries:
        assert "--hash=sha256:" in entry, f"{lock}: no hash for {entry.splitlines()[0]}"


def test_one_version_everywhere() -> None:
    assert metadata.version(DISTRIBUTION) == guardrail.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{guardrail.__version__}]" in changelog, "CHANGELOG.md has no section for this version"


def test_the_distribution_says_what_it_is_and_ships_its_licence_and_types() -> None:
    meta = metadata.metadata(DISTRIBUTION)
    assert meta["Name"] == DISTRIBUTION
    assert meta["License-Expression"] == "Apache-2.0"
    classifiers = meta.get_all("Classifier") or []
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Typing :: Typed" in classifiers
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(urls)
    assert set(meta.get_all("Provides-Extra") or []) >= {"redis", "sidecar", "jwt"}
    files = [str(file) for file in metadata.files(DISTRIBUTION) or []]
    assert any(file.endswith(".dist-info/licenses/LICENSE") for file in files)
    assert (Path(guardrail.__file__).parent / "py.typed").is_file()


def test_the_core_install_is_what_the_middleware_needs() -> None:
    """No server, Redis client or JWT library comes with the core install: they are extras."""
    core = {canonical(Requirement(text).name) for text in PYPROJECT["dependencies"]}
    assert not core & {"uvicorn", "httpx", "httptools", "redis", "pyjwt", "hiredis"}
