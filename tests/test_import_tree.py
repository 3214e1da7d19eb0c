"""The import tree at run time: what importing a layer loads, in a fresh interpreter.

`lint-imports` (.importlinter, run by CI) checks the tree as the sources spell it; these tests check
what Python actually loads, which a name hidden from the sources (a type annotation, a dynamic import)
could change.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What only the HTTP surface, the store, the metrics or policy loading need.
HEAVY = ["starlette", "prometheus_client", "pydantic", "pydantic_settings", "yaml", "jwt", "jinja2", "redis"]


def loaded_by(module: str) -> set[str]:
    """The top-level packages and guardrail modules importing `module` loads in a fresh interpreter."""
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted({m if m.startswith('guardrail') else m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_the_engine_loads_nothing_of_http_the_store_metrics_or_policy_loading() -> None:
    loaded = loaded_by("guardrail.engine")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    ours = {name for name in loaded if name.startswith("guardrail.")}
    allowed = ("guardrail.engine", "guardrail.caching", "guardrail.state", "guardrail.speedups", "guardrail._")
    assert all(name.startswith(allowed) for name in ours), sorted(ours)


@pytest.mark.parametrize("module", ["guardrail.explain.render", "guardrail.messages"])
def test_explanations_load_no_http_store_or_metrics(module: str) -> None:
    loaded = loaded_by(module)
    assert loaded.isdisjoint(["starlette", "prometheus_client", "redis", "jinja2"]), sorted(loaded)


def test_the_store_loads_no_http() -> None:
    loaded = loaded_by("guardrail.store")
    assert loaded.isdisjoint(["starlette", "jinja2", "uvicorn", "httptools"]), sorted(loaded)
    assert not any(name.startswith(("guardrail.web", "guardrail.middleware", "guardrail.sidecar")) for name in loaded)


@pytest.mark.parametrize("module", ["guardrail", "guardrail.tracing", "guardrail.sidecar", "guardrail.logs"])
def test_opentelemetry_is_loaded_only_when_tracing_is_on(module: str) -> None:
    """Deciding whether to trace, and writing a log line that could carry a trace id, import nothing of it."""
    loaded = loaded_by(module)
    assert "opentelemetry" not in loaded
    assert "guardrail.tracing.spans" not in loaded and "guardrail.tracing.sdk" not in loaded
