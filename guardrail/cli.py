"""The `guardrail` command: demo, serve, check, test, explain, simulate, diff, schema, tcf decode, alerts."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from guardrail._version import __version__
from guardrail.authoring.commands import add_parsers as add_authoring_parsers
from guardrail.errors import MissingExtra, PolicyError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guardrail", description="A personalization guardrail.")
    parser.add_argument("--version", action="version", version=f"guardrail {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run a demo recommendation service behind the guardrail")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--config", help="a policy file instead of the demo policy")
    demo.add_argument(
        "--log-level",
        default=None,
        help="JSON log level (info logs every guarded request); default GUARDRAIL_LOG_LEVEL or warning",
    )

    serve = commands.add_parser(
        "serve",
        help="run the guardrail as a sidecar proxy in front of a service",
        description="Run the guardrail as a reverse proxy in front of UPSTREAM. SIGHUP re-reads the policy: a "
        "valid one swaps in, an invalid one is refused (logged, counted) and the old one keeps serving.",
    )
    serve.add_argument("--config", help="the policy file (default: GUARDRAIL_CONFIG, else config/guardrail.yaml)")
    serve.add_argument(
        "--upstream", help="the service's URL, such as http://127.0.0.1:8080 (default: GUARDRAIL_UPSTREAM)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--watch",
        action="store_true",
        default=None,
        help="also re-read the policy file when it changes, checked about once a second (default: GUARDRAIL_WATCH)",
    )
    serve.add_argument(
        "--upstream-timeout",
        type=float,
        help="seconds the upstream may take to answer before a 504 (default: GUARDRAIL_UPSTREAM_TIMEOUT, else 30)",
    )
    serve.add_argument(
        "--metrics-port",
        type=_port,
        help="serve /metrics on this port of the same host; the public port then passes /metrics on to the "
        "upstream (default: GUARDRAIL_METRICS_PORT, else /metrics on the public port)",
    )
    serve.add_argument("--log-level", help="JSON log level (default: GUARDRAIL_LOG_LEVEL, else info)")
    serve.add_argument(
        "--candidate",
        metavar="FILE",
        help="a policy evaluated beside the live one on sampled requests, counting where it decides otherwise "
        "(default: GUARDRAIL_CANDIDATE)",
    )
    serve.add_argument(
        "--candidate-rate", type=_rate, help="share of guarded requests the candidate decides (0 to 1; default 0.1)"
    )
    serve.add_argument(
        "--record-cases",
        metavar="FILE",
        help="append sampled guarded requests to FILE as cases for `guardrail diff`, without user ids "
        "(default: GUARDRAIL_RECORD_CASES; off)",
    )
    serve.add_argument("--record-rate", type=_rate, help="share of guarded requests recorded (0 to 1; default 0.01)")

    check = commands.add_parser("check", help="validate policy files; exit 1 listing every error")
    check.add_argument("files", nargs="+", metavar="FILE")

    add_authoring_parsers(commands)

    tcf = commands.add_parser("tcf", help="IAB TCF consent strings")
    tcf_commands = tcf.add_subparsers(dest="tcf_command", required=True, metavar="COMMAND")
    decode = tcf_commands.add_parser("decode", help="decode TC strings: one JSON object per input, in order")
    decode.add_argument("strings", nargs="+", metavar="STRING", help="TC strings, or - to read one per line from stdin")

    alerts = commands.add_parser(
        "alerts",
        help="print the Prometheus alert rules, every runbook link built from one base URL",
        description="Print config/alerts.yml (Prometheus alerting rules) with each alert's runbook_url built from "
        "URL: URL#<alert name in lower case>, or URL with {alert} replaced by that name.",
    )
    alerts.add_argument(
        "--runbook-base",
        metavar="URL",
        help="where the runbook (docs/operations.md, Runbook) is published (default: the repository's copy on GitHub)",
    )

    from guardrail.review_commands import add_parsers as add_review_parsers

    add_review_parsers(commands)

    args = parser.parse_args(argv)
    if args.command == "alerts":
        return print_alert_rules(args.runbook_base)
    if args.command == "review":
        from guardrail.review_commands import run as run_review

        return run_review(args)
    if args.command == "check":
        return check_files(args.files)
    if args.command == "tcf":
        return decode_tc_strings(args.strings)
    if args.command in ("test", "explain", "simulate", "diff", "schema"):
        from guardrail.authoring.commands import run as run_authoring

        return run_authoring(args)
    try:
        if args.command == "serve":
            return run_serve(args)
        return run_demo(args.host, args.port, args.config, args.log_level)
    except MissingExtra as exc:
        print(f"guardrail {args.command}: {exc}", file=sys.stderr)
        return 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {value}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a share of requests is 0 to 1, not {text}")
    return value


def run_serve(args: argparse.Namespace) -> int:
    from guardrail.optional import require
    from guardrail.settings import Settings, SettingsProblem

    require("sidecar", feature="guardrail serve")
    from guardrail.sidecar import serve

    try:
        settings = Settings.load()
    except SettingsProblem as exc:
        print(f"guardrail serve: {exc}", file=sys.stderr)
        return 2
    upstream = args.upstream or settings.upstream
    if not upstream:
        print("guardrail serve: give the upstream's URL with --upstream or GUARDRAIL_UPSTREAM", file=sys.stderr)
        return 2
    log_level = (args.log_level or settings.log_level or "info").lower()
    if not isinstance(logging.getLevelName(log_level.upper()), int):
        print(f"guardrail serve: no log level {log_level!r}; use debug, info, warning or error", file=sys.stderr)
        return 2
    metrics_port = args.metrics_port or settings.metrics_port
    if metrics_port == args.port:
        print(f"guardrail serve: --metrics-port must differ from --port ({args.port})", file=sys.stderr)
        return 2
    return serve(
        config=args.config or settings.config,
        upstream=upstream,
        host=args.host,
        port=args.port,
        workers=args.workers,
        watch=settings.watch if args.watch is None else args.watch,
        upstream_timeout=args.upstream_timeout or settings.upstream_timeout,
        log_level=log_level,
        metrics_port=metrics_port,
        candidate=args.candidate or settings.candidate,
        candidate_rate=settings.candidate_rate if args.candidate_rate is None else args.candidate_rate,
        record_cases=args.record_cases or settings.record_cases,
        record_rate=settings.record_rate if args.record_rate is None else args.record_rate,
    )


def decode_tc_strings(strings: Sequence[str]) -> int:
    import orjson

    from guardrail.consent.tcf import TcfError, decode, to_json

    inputs = [line.strip() for line in sys.stdin] if list(strings) == ["-"] else list(strings)
    status = 0
    for text in inputs:
        try:
            result: dict[str, object] = to_json(decode(text))
        except TcfError as exc:
            result, status = {"input": text, "error": str(exc)}, 1
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return status


def print_alert_rules(runbook_base: str | None) -> int:
    from guardrail.alerts import DEFAULT_RUNBOOK_BASE, RunbookBaseError, alert_rules

    try:
        rules = alert_rules(runbook_base or DEFAULT_RUNBOOK_BASE)
    except RunbookBaseError as exc:
        print(f"guardrail alerts: --runbook-base: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(rules)
    return 0


def check_files(files: Sequence[str]) -> int:
    from guardrail.policy.loading import load_policy

    status = 0
    for file in files:
        try:
            policy = load_policy(file)
        except PolicyError as exc:
            print(exc.report(), file=sys.stderr)
            status = 1
            continue
        guarded = ", ".join(route.path for route in policy.routes)
        print(
            f"{file}: ok: policy {policy.policy_id}, mode {policy.mode}, fail_mode {policy.fail_mode}, "
            f"{len(policy.purposes)} purposes, {len(policy.signals)} signals, "
            f"{len(policy.categories)} categories, routes {guarded}"
        )
    return status


def run_demo(host: str, port: int, config: str | None, log_level: str | None = None) -> int:
    from guardrail.optional import require
    from guardrail.settings import Settings, SettingsProblem

    require("sidecar", feature="guardrail demo")
    import uvicorn

    from guardrail.logs import configure_logging

    try:
        settings = Settings.load()
    except SettingsProblem as exc:
        print(f"guardrail demo: {exc}", file=sys.stderr)
        return 2
    configure_logging(log_level or settings.log_level or "warning")
    from guardrail.demo.app import build_demo_app, demo_policy_path, instructions
    from guardrail.policy.loading import load_policy

    try:
        policy = load_policy(config or demo_policy_path())
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    app = build_demo_app(policy)
    print(instructions(f"http://{host}:{port}", policy), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
