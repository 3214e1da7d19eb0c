"""`guardrail serve` (docs/architecture.md §9): the guardrail as a sidecar proxy in front of a service in any language.

One process, or `--workers N` processes under uvicorn's supervisor, each serving a `Sidecar`:
`/metrics`, and everything else through `GuardrailMiddleware` to a `ReverseProxy` of the upstream.
With `--metrics-port P`, every process also listens on P (same host) for `/metrics` alone, and the
public port answers `/metrics` with 404.

- `build_sidecar(...)` makes the app for one process; `create_app()` makes it from the environment
  (`GUARDRAIL_CONFIG`, `GUARDRAIL_UPSTREAM`, `GUARDRAIL_STORE`, `GUARDRAIL_UPSTREAM_TIMEOUT`,
  `GUARDRAIL_WATCH`, `GUARDRAIL_LOG_LEVEL`, `GUARDRAIL_METRICS_PORT`), as each worker does; `serve(...)` runs it.
- SIGHUP re-reads the policy (`guardrail.reload`). With workers, the supervisor passes SIGHUP on to
  every worker, and each reloads in place (see `Supervisor`); with `--watch` each worker watches the file.
- With workers, prometheus_client's multiprocess mode: every worker writes its values to files in
  `PROMETHEUS_MULTIPROC_DIR` (emptied at start), and `/metrics` in any worker sums them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config as UvicornConfig
from uvicorn.supervisors.multiprocess import Multiprocess

from guardrail.errors import StoreError
from guardrail.metrics import metrics_app, metrics_for, multiprocess_mode, multiprocess_registry
from guardrail.middleware import GuardrailMiddleware
from guardrail.proxy import ReverseProxy
from guardrail.reload import PolicyReloader, load_or_snapshot
from guardrail.store import Store
from guardrail.web.problem import problem

logger = logging.getLogger("guardrail")

METRICS_PATH = "/metrics"
# Where `serve` keeps a copy of the live policy for its workers (see `guardrail.reload.load_or_snapshot`).
SNAPSHOT_ENV = "GUARDRAIL_POLICY_SNAPSHOT"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CSRF_KEY_ENV = "GUARDRAIL_CSRF_KEY"
_NOT_FOUND = problem(404, "Not Found", "Nothing is served at this address.")


class Sidecar:
    """The ASGI app `guardrail serve` runs in each process."""

    def __init__(
        self,
        middleware: GuardrailMiddleware,
        proxy: ReverseProxy,
        reloader: PolicyReloader,
        metrics: Any,
        *,
        watch: bool,
        metrics_port: int | None = None,
    ) -> None:
        self.middleware = middleware
        self.proxy = proxy
        self.reloader = reloader
        self.metrics = metrics
        self.watch = watch
        # With a port of their own, the metrics are served there alone, and not on the public port.
        self.metrics_port = metrics_port
        self.public_metrics = metrics if metrics_port is None else _NOT_FOUND
        self.hangups_before_start = 0  # SIGHUPs that came before the event loop could handle them
        # Whether startup moves everything made so far out of the cycle collector's walk (create_app
        # sets it: a worker process is ours; an app built by a caller lives in their process).
        self.freeze_heap = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.metrics_port is not None and (scope.get("server") or ("", 0))[1] == self.metrics_port:
            await self._metrics_port(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await self.public_metrics(scope, receive, send)
        else:
            await self.middleware(scope, receive, send)

    async def _metrics_port(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
        elif scope["path"] == METRICS_PATH:
            await self.metrics(scope, receive, send)
        else:
            await _NOT_FOUND(scope, receive, send)

    async def startup(self, *, sighup: bool = True) -> None:
        await self.proxy.start()
        # Connect to the store before the first request: a worker that starts (or restarts) would
        # otherwise spend its first requests' 20 ms budget opening a connection, and answer degraded.
        with contextlib.suppress(StoreError):
            await self.middleware.store.check()
        if sighup:
            self.reloader.install_sighup()
        if self.watch:
            self.reloader.start_watching()
        if self.hangups_before_start:
            self.hangups_before_start = 0
            self.reloader.reload()
        if self.freeze_heap:
            # Modules, the policy and the app live as long as the process. Frozen, a full collection
            # no longer walks them: 26 ms → 3 ms in benchmarks/ (in process, 1,000 users served), a pause
            # every request waiting behind it would otherwise add to p99. Frozen objects are still freed
            # when their last reference goes; only cyclic garbage among them (an old policy's, after a
            # reload) stays, once per reload.
            gc.collect()
            gc.freeze()

    async def shutdown(self) -> None:
        self.reloader.close()
        await self.proxy.aclose()
        await self.middleware.store.aclose()
        # The batched counts, into the metric files before this worker goes.
        self.middleware.metrics.tally.flush()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            await self.startup()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await self.shutdown()
        await send({"type": "lifespan.shutdown.complete"})


def build_sidecar(
    policy_path: str | os.PathLike[str],
    upstream: str,
    *,
    store: Store | str | None = None,
    upstream_timeout: float = 30.0,
    watch: bool = False,
    registry: CollectorRegistry | None = None,
    snapshot: str | os.PathLike[str] | None = None,
    metrics_port: int | None = None,
) -> Sidecar:
    """The sidecar app for one process. `registry`: where the metrics live (the global registry by
    default; ignored in multiprocess mode, where values live in files and `/metrics` reads them all).
    `metrics_port`: the local port whose requests get `/metrics` alone (and the others not it)."""
    multiprocess = multiprocess_mode()
    if multiprocess:
        registry = CollectorRegistry()  # the values live in the shared files; this only names the metrics
    elif registry is None:
        registry = REGISTRY
    metrics = metrics_for(registry)
    middleware: GuardrailMiddleware | None = None

    def trusts_forwarded(scope: Scope) -> bool:
        # The policy's trusted proxies, whichever policy is live now.
        return middleware is not None and middleware.guard.identity.is_trusted(scope)

    proxy = ReverseProxy(upstream, timeout=upstream_timeout, metrics=metrics, trusts_forwarded=trusts_forwarded)
    middleware = GuardrailMiddleware(
        proxy, policy=load_or_snapshot(policy_path, snapshot), store=store, registry=registry
    )
    middleware.add_readiness_check("upstream", proxy.check)
    reloader = PolicyReloader(middleware, policy_path, snapshot=snapshot)
    exposition = multiprocess_registry(metrics) if multiprocess else registry
    return Sidecar(middleware, proxy, reloader, metrics_app(exposition), watch=watch, metrics_port=metrics_port)


def create_app() -> Sidecar:
    """The sidecar from the environment: the app factory uvicorn calls in each worker process."""
    from guardrail.logs import configure_logging
    from guardrail.settings import Settings

    # Until the event loop handles SIGHUP, count it rather than die of it (its default action).
    hangups: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: hangups.append(signum))
    configure_logging()
    settings = Settings()
    if settings.upstream is None:
        raise SystemExit("guardrail serve needs the upstream's URL: --upstream or GUARDRAIL_UPSTREAM")
    app = build_sidecar(
        settings.config,
        settings.upstream,
        store=settings.store,
        upstream_timeout=settings.upstream_timeout,
        watch=settings.watch,
        snapshot=os.environ.get(SNAPSHOT_ENV),
        metrics_port=settings.metrics_port,
    )
    app.hangups_before_start = len(hangups)
    app.freeze_heap = True
    return app


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


def serve(
    *,
    config: str,
    upstream: str,
    host: str,
    port: int,
    workers: int,
    watch: bool,
    upstream_timeout: float,
    log_level: str,
    metrics_port: int | None = None,
) -> int:
    """Run the sidecar until SIGINT or SIGTERM. The policy and upstream are checked first: exit 1 or 2.
    `metrics_port`: `/metrics` there (same host) rather than on `port`."""
    import uvicorn

    from guardrail.errors import PolicyError
    from guardrail.logs import configure_logging
    from guardrail.policy.loading import parse_policy, read_policy_text

    try:
        text = read_policy_text(config)
        parse_policy(text, source=config)
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    try:
        ReverseProxy(upstream)
    except ValueError as exc:
        print(f"guardrail serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(log_level)
    share_csrf_key(workers)
    # Workers are new processes: they read their settings from the environment (create_app).
    os.environ.update(
        GUARDRAIL_CONFIG=config,
        GUARDRAIL_UPSTREAM=upstream,
        GUARDRAIL_UPSTREAM_TIMEOUT=str(upstream_timeout),
        GUARDRAIL_WATCH="true" if watch else "false",
        GUARDRAIL_LOG_LEVEL=log_level,
    )
    if metrics_port is None:
        os.environ.pop("GUARDRAIL_METRICS_PORT", None)
    else:
        os.environ["GUARDRAIL_METRICS_PORT"] = str(metrics_port)
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "log_config": uvicorn_log_config(log_level),
        "access_log": False,  # its lines carry raw paths; guarded requests get their own JSON line
        "proxy_headers": False,  # the client address is the TCP peer: identity.trusted_proxies decides
        "server_header": False,
        "lifespan": "on",
    }
    try:
        extra = [] if metrics_port is None else [metrics_socket(host, metrics_port)]
    except OSError as exc:
        print(f"guardrail serve: cannot listen on {host}:{metrics_port} for the metrics: {exc}", file=sys.stderr)
        return 1
    if workers == 1:
        if MULTIPROC_ENV in os.environ:
            _empty(os.environ[MULTIPROC_ENV])
        single = uvicorn.Config("guardrail.sidecar:create_app", **options)
        server = uvicorn.Server(single)
        server.run(sockets=[listening_socket(single), *extra] if extra else None)
        return 0 if server.started else 1
    run_dir = tempfile.mkdtemp(prefix="guardrail-serve-")
    try:
        metrics_dir = os.environ.setdefault(MULTIPROC_ENV, os.path.join(run_dir, "metrics"))
        _empty(metrics_dir)
        snapshot = Path(run_dir, "policy.yaml")
        snapshot.write_text(text, encoding="utf-8")
        os.environ[SNAPSHOT_ENV] = str(snapshot)
        if os.environ.get("GUARDRAIL_STORE", "memory://").startswith("memory://"):
            logger.warning(
                "with %d workers and the memory:// store each worker keeps its own users' controls; "
                "set GUARDRAIL_STORE=redis://... to share them",
                workers,
            )
        settings = uvicorn.Config("guardrail.sidecar:create_app", **options)
        Supervisor(settings, sockets=[listening_socket(settings), *extra], metrics_dir=metrics_dir).run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def share_csrf_key(workers: int) -> None:
    """One key for the controls page's CSRF tokens in every worker, so that a form one worker issued is
    accepted by the next (a browser's next connection may reach any): `GUARDRAIL_CSRF_KEY`, else one
    made here and handed to the workers in their environment. Other replicas cannot be handed it."""
    if os.environ.get(CSRF_KEY_ENV):
        return
    store = os.environ.get("GUARDRAIL_STORE", "memory://")
    if not store.startswith("memory://"):
        logger.warning(
            "GUARDRAIL_CSRF_KEY is not set: the controls page signs its forms with a key made at start, which "
            "other replicas sharing the %s store do not have, so a form may be refused by the next replica; "
            "set the same GUARDRAIL_CSRF_KEY on every replica",
            store.partition("://")[0],  # (the URL itself may hold a password)
        )
    if workers > 1:
        os.environ[CSRF_KEY_ENV] = secrets.token_hex(32)


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


def _empty(directory: str) -> None:
    """Start prometheus_client's multiprocess directory afresh: counts of an earlier run would add up."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own log lines as JSON too, at the same level as the guardrail's."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    quiet = {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "guardrail.logs.JsonFormatter"}},
        "handlers": {"stderr": handler},
        "loggers": {"uvicorn": quiet, "uvicorn.error": quiet, "uvicorn.access": quiet},
    }
