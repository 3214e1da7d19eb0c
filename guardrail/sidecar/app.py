"""The ASGI app `guardrail serve` runs in each process (docs/architecture.md §9): `/metrics`, and
everything else through `GuardrailMiddleware` to a `ReverseProxy` of the upstream. With a metrics
port, requests that came in on it get `/metrics` alone, and the public port passes `/metrics` on to the
upstream like any other path (the service's own metrics are reachable through the sidecar again).

- `build_sidecar(...)` makes the app for one process; `create_app()` makes it from the settings
  (`guardrail.settings.Settings`: the environment and the secrets directory), as each worker does.
- SIGHUP re-reads the policy (`guardrail.reload`); with `--watch` each worker watches the file.
- With workers, prometheus_client's multiprocess mode: every worker writes its values to files in
  `PROMETHEUS_MULTIPROC_DIR`, and `/metrics` in any worker sums them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry
from starlette.types import Receive, Scope, Send

from guardrail.metrics import metrics_for, multiprocess_mode, multiprocess_registry
from guardrail.middleware import GuardrailMiddleware
from guardrail.reload import PolicyReloader, load_or_snapshot
from guardrail.sidecar.proxy import ReverseProxy
from guardrail.sidecar.tls import UpstreamTLS
from guardrail.store import Store
from guardrail.web.exposition import metrics_app
from guardrail.web.problem import problem

if TYPE_CHECKING:
    from guardrail.settings import Settings
    from guardrail.tracing import TracerProvider

logger = logging.getLogger("guardrail")

METRICS_PATH = "/metrics"
# Where `serve` keeps a copy of the live policy for its workers (see `guardrail.reload.load_or_snapshot`).
SNAPSHOT_ENV = "GUARDRAIL_POLICY_SNAPSHOT"
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
        # With a port of their own, the metrics are served there alone, and the public port's
        # `/metrics` is the upstream's.
        self.metrics_port = metrics_port
        self.hangups_before_start = 0  # SIGHUPs that came before the event loop could handle them
        # Whether startup moves everything made so far out of the cycle collector's walk (create_app
        # sets it: a worker process is ours; an app built by a caller lives in their process).
        self.freeze_heap = False
        # What exports the last spans at shutdown, when this worker set up the tracer provider (create_app).
        self.close_traces: Callable[[], object] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.metrics_port is not None and (scope.get("server") or ("", 0))[1] == self.metrics_port:
            await self._metrics_port(scope, receive, send)
        elif self.metrics_port is None and scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await self.metrics(scope, receive, send)
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
        await self.middleware.runtime.start()  # the store, connected before the first request
        if sighup:
            self.reloader.install_sighup()
        if self.watch:
            self.reloader.start_watching()
        if self.hangups_before_start:
            self.hangups_before_start = 0
            self.reloader.reload()
        if self.freeze_heap:
            # Modules, the policy and the app live as long as the process. Frozen, a full collection
            # no longer walks them, which shortens the pause every request waiting behind it would add to
            # p99 (docs/integrate.md gives the figures). Frozen objects are still freed
            # when their last reference goes; only cyclic garbage among them (an old policy's, after a
            # reload) stays, once per reload.
            gc.collect()
            gc.freeze()

    async def shutdown(self) -> None:
        self.reloader.close()
        await self.proxy.aclose()
        # The records written, the store closed, the batched counts into the metric files before this worker goes.
        await self.middleware.runtime.close()
        if self.close_traces is not None:
            await asyncio.to_thread(self.close_traces)  # sends to the collector: not on the event loop

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
    candidate: str | os.PathLike[str] | None = None,
    candidate_rate: float = 0.1,
    record_cases: str | os.PathLike[str] | None = None,
    record_rate: float = 0.01,
    tls: UpstreamTLS | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Sidecar:
    """The sidecar app for one process. `registry`: where the metrics live (the global registry by
    default; ignored in multiprocess mode, where values live in files and `/metrics` reads them all).
    `metrics_port`: the local port whose requests get `/metrics` alone (the others get the upstream's).
    `candidate`, `record_cases`, their rates and `tracer_provider`: as `GuardrailMiddleware` takes them. `tls`:
    how to reach an `https://` upstream (its CA file, a client certificate, the name its certificate carries)."""
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

    proxy = ReverseProxy(
        upstream, timeout=upstream_timeout, metrics=metrics, trusts_forwarded=trusts_forwarded, tls=tls
    )
    middleware = GuardrailMiddleware(
        proxy,
        policy=load_or_snapshot(policy_path, snapshot),
        store=store,
        registry=registry,
        candidate=candidate,
        candidate_rate=candidate_rate,
        record_cases=record_cases,
        record_rate=record_rate,
        tracer_provider=tracer_provider,
    )
    proxy.tracing = middleware.runtime.tracing  # the upstream's spans nest under the guardrail's
    middleware.runtime.add_readiness_check("upstream", proxy.check)
    reloader = PolicyReloader(middleware, policy_path, snapshot=snapshot)
    exposition = multiprocess_registry(metrics) if multiprocess else registry
    return Sidecar(middleware, proxy, reloader, metrics_app(exposition), watch=watch, metrics_port=metrics_port)


def create_app() -> Sidecar:
    """The sidecar from the environment: the app factory uvicorn calls in each worker process."""
    from guardrail.logs import configure_logging
    from guardrail.settings import Settings, SettingsProblem
    from guardrail.tracing import install_for_serve

    # Until the event loop handles SIGHUP, count it rather than die of it (its default action).
    hangups: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: hangups.append(signum))
    try:
        settings = Settings.load()
    except SettingsProblem as exc:
        raise SystemExit(f"guardrail serve: {exc}") from None
    configure_logging()  # GUARDRAIL_LOG_LEVEL, which `serve` sets from --log-level
    close_traces = install_for_serve()  # before the middleware asks for the global tracer provider
    if settings.upstream is None:
        raise SystemExit("guardrail serve needs the upstream's URL: --upstream or GUARDRAIL_UPSTREAM")
    app = build_sidecar(
        settings.config,
        settings.upstream,
        store=settings.store.get_secret_value(),
        upstream_timeout=settings.upstream_timeout,
        watch=settings.watch,
        snapshot=os.environ.get(SNAPSHOT_ENV),
        metrics_port=settings.metrics_port,
        candidate=settings.candidate,
        candidate_rate=settings.candidate_rate,
        record_cases=settings.record_cases,
        record_rate=settings.record_rate,
        tls=upstream_tls(settings),
    )
    app.hangups_before_start = len(hangups)
    app.freeze_heap = True
    app.close_traces = close_traces
    return app


def upstream_tls(settings: Settings) -> UpstreamTLS:
    """The upstream's TLS settings (`GUARDRAIL_UPSTREAM_CA_FILE`, `_CLIENT_CERT`, `_CLIENT_KEY`, `_SERVER_NAME`)."""
    return UpstreamTLS(
        ca_file=settings.upstream_ca_file,
        client_cert=settings.upstream_client_cert,
        client_key=settings.upstream_client_key,
        server_name=settings.upstream_server_name,
    )
