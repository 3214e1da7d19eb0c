"""`serve(...)`: what `guardrail serve` runs. It checks the policy and the upstream, hands the
workers their settings in the environment (with one CSRF key for all, `share_csrf_key`), and runs
one process or uvicorn's `Supervisor` of `--workers N`, each serving `create_app()`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from guardrail.recording import open_cases
from guardrail.settings import Settings
from guardrail.sidecar.app import SNAPSHOT_ENV, upstream_tls
from guardrail.sidecar.proxy import ReverseProxy
from guardrail.sidecar.supervisor import (
    MULTIPROC_ENV,
    Supervisor,
    empty_metrics_dir,
    listening_socket,
    metrics_socket,
)

logger = logging.getLogger("guardrail")

CSRF_KEY_ENV = "GUARDRAIL_CSRF_KEY"
# The app factory each worker process calls.
APP_FACTORY = "guardrail.sidecar.app:create_app"


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
    candidate: str | None = None,
    candidate_rate: float = 0.1,
    record_cases: str | None = None,
    record_rate: float = 0.01,
) -> int:
    """Run the sidecar until SIGINT or SIGTERM. The policy, the candidate, the cases file and the upstream
    are checked first: exit 1 or 2. `metrics_port`: `/metrics` there (same host) rather than on `port`.
    `candidate`: a policy file evaluated beside the live one on `candidate_rate` of guarded requests;
    `record_cases`: a file every worker appends `record_rate` of guarded requests to, as cases."""
    import uvicorn

    from guardrail.errors import GuardrailError, MissingExtra, PolicyError
    from guardrail.logs import configure_logging
    from guardrail.policy.loading import parse_policy, read_policy_text
    from guardrail.tracing import check_for_serve

    try:
        text = read_policy_text(config)
        parse_policy(text, source=config)
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    if candidate is not None:
        try:
            parse_policy(read_policy_text(candidate), source=candidate)
        except PolicyError as exc:
            print(f"guardrail serve: the candidate policy is refused\n{exc.report()}", file=sys.stderr)
            return 1
    if record_cases is not None:
        try:
            os.close(open_cases(record_cases))
        except OSError as exc:
            print(f"guardrail serve: cannot append cases to {record_cases}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    settings = Settings.load()  # (checked by the command line already)
    try:
        ReverseProxy(upstream, tls=upstream_tls(settings))
    except ValueError as exc:  # the URL, or a TLS file that cannot be used
        print(f"guardrail serve: {exc}", file=sys.stderr)
        return 2
    try:
        check_for_serve()
    except MissingExtra as exc:
        print(f"guardrail serve: {exc}", file=sys.stderr)
        return 1
    except GuardrailError as exc:
        print(f"guardrail serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(log_level)
    share_csrf_key(workers, settings)
    # Workers are new processes: they read their settings from the environment (create_app).
    os.environ.update(
        GUARDRAIL_CONFIG=config,
        GUARDRAIL_UPSTREAM=upstream,
        GUARDRAIL_UPSTREAM_TIMEOUT=str(upstream_timeout),
        GUARDRAIL_WATCH="true" if watch else "false",
        GUARDRAIL_LOG_LEVEL=log_level,
        GUARDRAIL_CANDIDATE_RATE=str(candidate_rate),
        GUARDRAIL_RECORD_RATE=str(record_rate),
    )
    for name, value in (("GUARDRAIL_CANDIDATE", candidate), ("GUARDRAIL_RECORD_CASES", record_cases)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
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
            empty_metrics_dir(os.environ[MULTIPROC_ENV])
        single = uvicorn.Config(APP_FACTORY, **options)
        server = uvicorn.Server(single)
        server.run(sockets=[listening_socket(single), *extra] if extra else None)
        return 0 if server.started else 1
    run_dir = tempfile.mkdtemp(prefix="guardrail-serve-")
    try:
        metrics_dir = os.environ.setdefault(MULTIPROC_ENV, os.path.join(run_dir, "metrics"))
        empty_metrics_dir(metrics_dir)
        snapshot = Path(run_dir, "policy.yaml")
        snapshot.write_text(text, encoding="utf-8")
        os.environ[SNAPSHOT_ENV] = str(snapshot)
        if settings.store.get_secret_value().startswith("memory://"):
            logger.warning(
                "with %d workers and the memory:// store each worker keeps its own users' controls; "
                "set GUARDRAIL_STORE=redis://... to share them",
                workers,
            )
        supervised = uvicorn.Config(APP_FACTORY, **options)
        Supervisor(supervised, sockets=[listening_socket(supervised), *extra], metrics_dir=metrics_dir).run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def share_csrf_key(workers: int, settings: Settings) -> None:
    """One key for the controls page's CSRF tokens in every worker, so that a form one worker issued is
    accepted by the next (a browser's next connection may reach any): `GUARDRAIL_CSRF_KEY`, else one
    made here and handed to the workers in their environment. Other replicas cannot be handed it."""
    if settings.csrf_key is not None:  # from the environment or the secrets directory, which workers read too
        return
    store = settings.store.get_secret_value()
    if not store.startswith("memory://"):
        logger.warning(
            "GUARDRAIL_CSRF_KEY is not set: the controls page signs its forms with a key made at start, which "
            "other replicas sharing the %s store do not have, so a form may be refused by the next replica; "
            "set the same GUARDRAIL_CSRF_KEY on every replica",
            store.partition("://")[0],  # (the URL itself may hold a password)
        )
    if workers > 1:
        os.environ[CSRF_KEY_ENV] = secrets.token_hex(32)


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
