"""The ASGI servers a user may run guardrail under, each as a subprocess serving
tests/servers/apps/guarded_service.py on a free port, as its command line would be typed.

`SERVERS` lists them with the HTTP version the tests speak to each: Hypercorn serves HTTP/1.1 and h2c
(HTTP/2 with prior knowledge on a cleartext socket) on one port, so it is listed for both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.sidecar.servers import HOST, free_port, wait_for

APPS = Path(__file__).resolve().parent / "apps"
APP = "guarded_service:app"
STOP_SECONDS = 30.0


@dataclass(frozen=True)
class Server:
    """How to start one server, and the HTTP version the tests speak to it."""

    name: str
    module: str  # run as `python -m MODULE`, the venv's own, which is the console script's program
    http2: bool

    def command(self, port: int) -> list[str]:
        if self.module == "uvicorn":
            arguments = [APP, "--host", HOST, "--port", str(port)]
        elif self.module == "hypercorn":
            arguments = [APP, "--bind", f"{HOST}:{port}"]
        else:  # granian: HTTP/1.1 and h2c by prior knowledge on one port (`--http auto`, its default)
            arguments = ["--interface", "asgi", "--host", HOST, "--port", str(port), APP]
        return [sys.executable, "-m", self.module, *arguments]


SERVERS = [
    Server("uvicorn", "uvicorn", http2=False),
    Server("hypercorn-h1", "hypercorn", http2=False),
    Server("hypercorn-h2c", "hypercorn", http2=True),
    Server("granian", "granian", http2=False),
    Server("granian-h2c", "granian", http2=True),
]


class ServerProcess:
    """One server in its own process group; its output is kept in `lines` for a failing test to show."""

    def __init__(self, server: Server, policy: Path, events: Path) -> None:
        self.server = server
        self.events = events
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        environment = {key: value for key, value in os.environ.items() if not key.startswith("GUARDRAIL_")}
        # The app's directory alone: the guardrail served is the installed one (.ci/run tests the wheel).
        environment.update(
            PYTHONPATH=str(APPS),
            PYTHONUNBUFFERED="1",
            GUARDED_SERVICE_POLICY=str(policy),
            GUARDED_SERVICE_EVENTS=str(events),
        )
        self.process = subprocess.Popen(
            server.command(self.port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=policy.parent,
            env=environment,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name=f"{server.name} output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.server.name} exited ({self.process.returncode}):\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/guardrail/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, f"{self.server.name} answering /guardrail/readyz")

    def stop(self) -> int:
        """SIGTERM, as a container runtime sends: a graceful stop, the lifespan's shutdown included."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_SECONDS)
        self._reader.join(STOP_SECONDS)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode
