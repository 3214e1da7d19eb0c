"""The processes of `guardrail serve` with `--workers N`: uvicorn's supervisor with SIGHUP passed on to
every worker (`Supervisor`), the listening sockets it hands them (`listening_socket`, and
`metrics_socket` for `--metrics-port`), and prometheus_client's multiprocess directory they share
(`MULTIPROC_ENV`, emptied at start by `empty_metrics_dir`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess
from uvicorn.config import Config as UvicornConfig
from uvicorn.supervisors.multiprocess import Multiprocess

from guardrail.sidecar.app import METRICS_PATH

logger = logging.getLogger("guardrail")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, with SIGHUP passed on to every worker, each reloading its policy in
    place. uvicorn's own SIGHUP restarts the workers one after the other instead: slower, it forgets a
    `memory://` store's state, and a broken policy file would show only as new workers that fail to
    start (the restart is then abandoned and the old workers keep serving) with nothing counted, where
    an in-place reload logs the problems and counts `guardrail_policy_reloads_total{result="error"}`.
    A worker that goes away is marked dead for prometheus_client, so its live gauges leave `/metrics`."""

    def __init__(self, config: Any, sockets: list[Any], metrics_dir: str) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir

    def handle_hup(self) -> None:
        logging.getLogger("uvicorn.error").info("Received SIGHUP, asking the workers to reload the policy.")
        for process in self.processes:
            if process.pid is not None and process.process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    def handle_signals(self) -> None:
        before = self._pids()
        super().handle_signals()  # SIGTTOU stops a worker
        self._mark_dead(before)

    def keep_subprocess_alive(self) -> None:
        before = self._pids()
        super().keep_subprocess_alive()  # replaces workers that died
        self._mark_dead(before)

    def _pids(self) -> set[int]:
        return {process.pid for process in self.processes if process.pid is not None}

    def _mark_dead(self, before: set[int]) -> None:
        for pid in before - self._pids():
            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]


def listening_socket(settings: UvicornConfig) -> socket.socket:
    """uvicorn's socket for its workers, re-made from its descriptor so that it says it is TCP.

    uvicorn creates it with protocol 0, and the sockets accepted from it inherit that; asyncio sets
    TCP_NODELAY only on sockets whose protocol is TCP. Without it every response written in two parts
    waits for the client's delayed ACK: 40 ms per request with workers (measured: 1.5 ms with one)."""
    made = settings.bind_socket()
    return socket.socket(fileno=made.detach())  # family, type and protocol read from the descriptor


def metrics_socket(host: str, port: int) -> socket.socket:
    """The socket for `--metrics-port`, bound as uvicorn binds its own (without its "running on" line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    logger.info("metrics on http://%s:%d%s", host, port, METRICS_PATH)
    return sock


def empty_metrics_dir(directory: str) -> None:
    """Start prometheus_client's multiprocess directory afresh: counts of an earlier run would add up."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
