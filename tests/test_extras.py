"""The core install is what the middleware needs; each other feature names its extra when it is missing.

Each case runs in a fresh interpreter where the extras' modules cannot be imported (as after
`pip install personalization-guardrail` alone), so what passes here passes on a core install.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from guardrail.optional import DISTRIBUTION, EXTRAS
from tests.conftest import ROOT

# Makes every module of the extras unimportable, as on a core install.
BLOCK = """
import importlib.abc, sys
BLOCKED = {blocked!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""


def run_without(extras: list[str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    blocked = sorted({module.partition(".")[0] for extra in extras for module in EXTRAS[extra]} | {"hiredis"})
    program = BLOCK.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def test_the_middleware_serves_a_guarded_request_on_the_core_install() -> None:
    done = run_without(
        list(EXTRAS),
        """
        import asyncio, json
        from guardrail import GuardrailMiddleware

        async def upstream(scope, receive, send):
            body = json.dumps({"items": [{"id": "a", "categories": ["movies"], "signals": []}]}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})

        async def main():
            app = GuardrailMiddleware(upstream, policy="config/guardrail.yaml", store="memory://")
            sent = []
            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}
            async def send(message):
                sent.append(message)
            scope = {"type": "http", "method": "GET", "path": "/recommendations", "raw_path": b"/recommendations",
                     "query_string": b"", "headers": [], "client": ("127.0.0.1", 1), "server": ("t", 80),
                     "scheme": "http", "http_version": "1.1", "root_path": ""}
            await app(scope, receive, send)
            print(json.dumps(json.loads(sent[-1]["body"])["items"][0]["explanation"]))

        asyncio.run(main())
        """,
    )
    assert done.returncode == 0, done.stderr
    assert "text" in done.stdout  # the item came back explained


@pytest.mark.parametrize(
    ("extra", "code", "feature"),
    [
        ("redis", "from guardrail import create_store; create_store('redis://127.0.0.1:6379/0')", "the store redis://"),
        (
            "redis",
            "from guardrail import create_store; create_store('redis+cluster://127.0.0.1:7000')",
            "the store redis+cluster://",
        ),
        (
            "jwt",
            """
            import os
            from guardrail import GuardrailMiddleware, load_policy
            os.environ["GUARDRAIL_JWT_KEY"] = "k" * 32
            policy = load_policy("config/guardrail.yaml")
            policy = policy.model_copy(update={"identity": policy.identity.model_copy(update={"source": "jwt"})})
            GuardrailMiddleware(lambda *a: None, policy=policy, store="memory://")
            """,
            "identity.source: jwt",
        ),
    ],
)
def test_a_feature_without_its_extra_fails_at_start_naming_the_extra(extra: str, code: str, feature: str) -> None:
    done = run_without([extra], code)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("guardrail.errors.MissingExtra: ")
    assert f"{feature} needs the `{extra}` extra" in last
    assert f"pip install '{DISTRIBUTION}[{extra}]'" in last


@pytest.mark.parametrize("command", [["serve", "--upstream", "http://127.0.0.1:9"], ["demo"]])
def test_serve_and_demo_without_the_sidecar_extra_exit_1_naming_it(command: list[str]) -> None:
    cli = "import sys; from guardrail.cli import main; sys.exit(main(sys.argv[1:]))"
    done = run_without(["sidecar"], cli, *command)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"guardrail {command[0]}: guardrail {command[0]} needs the `sidecar` extra, which is not installed "
        f"(no module 'uvicorn'): pip install '{DISTRIBUTION}[sidecar]'"
    )
    assert "Traceback" not in done.stderr


def test_every_extra_is_declared_in_pyproject() -> None:
    """The extras the code names are the ones a user can install."""
    import tomllib

    declared = tomllib.loads(Path(ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(declared)
    assert tomllib.loads(Path(ROOT / "pyproject.toml").read_text())["project"]["name"] == DISTRIBUTION
