"""The policy-authoring verbs of the `guardrail` command: test, explain, simulate, diff, schema
(docs/integrate.md, "Change a policy safely")."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from guardrail.errors import GuardrailError, InvalidControls, PolicyError

if TYPE_CHECKING:
    from guardrail.authoring.scenario import Scenario
    from guardrail.review import Overlay


def add_parsers(commands: Any) -> None:
    test = commands.add_parser(
        "test",
        help="run golden cases (YAML) against a policy",
        description="Run golden cases: every FILE, and every *.yaml with `cases:` under each directory. "
        "Prints each failing case with expected and actual, then `N passed, M failed` and the reason codes no "
        "case exercised. Exit 1 on a failure or a file that does not load.",
    )
    test.add_argument("paths", nargs="*", default=["."], metavar="PATH")
    test.add_argument("--policy", help="the policy to run the cases against (default: each file's `policy:`)")

    explain = commands.add_parser(
        "explain",
        help="show how one item is decided for one user, rule by rule",
        description="Decide ITEM (a JSON object, or - for stdin) for one user and request, and show every rule "
        "in order of precedence with its verdict, the invasiveness score part by part, the action, the reasons "
        "and the text the user reads.",
    )
    explain.add_argument("item", metavar="ITEM.json|-")
    _scenario_arguments(explain)
    explain.add_argument("--tc", metavar="STRING", help="the request's TC string")
    explain.add_argument("--locale", help="the language of the text (default: negotiated as for a request)")
    explain.add_argument("--now", help="the moment, ISO 8601 with a zone (default: now)")
    explain.add_argument("--json", action="store_true", help="print JSON instead")
    explain.add_argument(
        "--store",
        metavar="URL",
        help="also apply the reviewers' decisions in force in this store, and name the ones that bear on ITEM",
    )

    simulate = commands.add_parser(
        "simulate",
        help="print the body the middleware would send one user for an upstream body",
        description="Run the middleware in process for one user and request, in front of an upstream that "
        "answers BODY (what your recommendation service returns, as application/json) on every path, and print "
        "what the middleware sends, byte for byte: the annotated body, or the body as it came in shadow mode, or "
        "the 502 problem when it cannot check BODY in closed fail mode (said on stderr). A route with a "
        "non_personalized rewrite asks its rewrite_to path, which answers BODY too. The user's controls are in "
        "a memory store; the policy's identity source is replaced by the simulated user. Exit 1 on a policy, "
        "controls or route that does not load.",
    )
    simulate.add_argument("body", metavar="BODY.json|-", help="what the upstream returns, or - for stdin")
    _scenario_arguments(simulate)
    simulate.add_argument("--tc", metavar="STRING", help="the request's TC string, where the policy reads it")
    simulate.add_argument("--accept-language", metavar="L", help="the request's Accept-Language")
    simulate.add_argument(
        "--headers", action="store_true", help="print the status and the Guardrail-* headers before the body"
    )

    diff = commands.add_parser(
        "diff",
        help="replay recorded requests through two policies and count the items that change action",
        description="Replay CASES.jsonl (one {controls, request, route, body} a line; docs/integrate.md says how "
        "to record them) through OLD and NEW, and print, per rule and per route, how many items change action "
        "(keep, discreet, hide), with examples. Exit 0 whatever changed; 1 if a policy does not load.",
    )
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")
    diff.add_argument("cases", metavar="CASES.jsonl", help="recorded requests, or - for stdin")
    diff.add_argument("--json", action="store_true", help="print JSON instead")
    diff.add_argument(
        "--store",
        metavar="URL",
        help="serve the reviewers' decisions in force in this store with NEW (OLD OLD CASES --store URL: what "
        "they change), or with both (--overlay-on both)",
    )
    diff.add_argument("--overlay-on", choices=["new", "both"], default="new", help="with --store (default: new)")

    commands.add_parser(
        "schema",
        help="print the JSON Schema of the policy file",
        description="Print the JSON Schema of the policy file, for editors (config/guardrail.schema.json).",
    )


def _scenario_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="the policy file")
    parser.add_argument("--controls", metavar="C.json", help="the user's controls, as GET /v1/controls shows them")
    parser.add_argument("--anonymous", action="store_true", help="nobody signed in")
    parser.add_argument("--gpc", action="store_true", help="the request carries Sec-GPC: 1")
    parser.add_argument("--age", type=int, help="the user's age, as the identity source says it")
    parser.add_argument("--route", help="the guarded route, as the policy spells it (default: its first)")


def run(args: argparse.Namespace) -> int:
    if args.command == "schema":
        from guardrail.authoring.schema import schema_text

        sys.stdout.write(schema_text())
        return 0
    if args.command == "test":
        from guardrail.authoring.cases import run as run_cases

        return run_cases(args.paths, args.policy)
    if args.command == "diff":
        return _diff(args)
    if args.command == "simulate":
        return _simulate(args)
    return _explain(args)


def _diff(args: argparse.Namespace) -> int:
    from guardrail.authoring.diff import diff, render
    from guardrail.policy.loading import load_policy
    from guardrail.review import EMPTY_OVERLAY

    try:
        old, new = load_policy(args.old), load_policy(args.new)
        overlay = _overlay(args.store)
        old_overlay = overlay if args.overlay_on == "both" else EMPTY_OVERLAY
        with sys.stdin if args.cases == "-" else open(args.cases, encoding="utf-8") as lines:
            report = diff(old, new, lines, old_overlay=old_overlay, new_overlay=overlay)
    except (PolicyError, OSError, GuardrailError) as exc:
        return _refused("diff", exc)
    print(json.dumps(report.to_json(), ensure_ascii=False, indent=2) if args.json else render(report))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from guardrail.authoring.explain import explain_item, render
    from guardrail.guard import Guard
    from guardrail.policy.loading import load_policy

    try:
        guard = Guard.for_scenarios(load_policy(args.policy), _overlay(args.store))
        item = _read_json(args.item, "ITEM")
        if not isinstance(item, dict):
            raise ValueError('ITEM must be a JSON object, such as {"id": 1, "categories": ["movies"]}')
        request: dict[str, Any] = {"gpc": args.gpc, "age": args.age, "tc_string": args.tc}
        if args.now is not None:
            request["now"] = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
        scenario = _scenario(args, request)
        if args.locale is not None and args.locale not in guard.policy.locales:
            raise ValueError(f"--locale {args.locale!r} is not one of the policy's locales: {guard.policy.locales}")
        report = explain_item(guard, scenario, item, locale=args.locale)
    except _USER_ERRORS as exc:
        return _refused("explain", exc)
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.json else render(report))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import asyncio
    from http import HTTPStatus

    from guardrail.authoring.simulate import simulate
    from guardrail.policy.loading import load_policy

    try:
        policy = load_policy(args.policy)
        request = {"gpc": args.gpc, "age": args.age, "tc_string": args.tc, "accept_language": args.accept_language}
        scenario = _scenario(args, request)
        body = sys.stdin.buffer.read() if args.body == "-" else open(args.body, "rb").read()  # noqa: SIM115
        result = asyncio.run(simulate(policy, scenario, body))
    except _USER_ERRORS as exc:
        return _refused("simulate", exc)
    if result.unchecked is not None:
        print(
            f"guardrail simulate: the middleware could not check BODY: {result.unchecked}. "
            f"Printed is what it sends (status {result.status}).",
            file=sys.stderr,
        )
    out = sys.stdout.buffer
    if args.headers:
        try:
            phrase = HTTPStatus(result.status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP {result.status} {phrase}".rstrip()]
        lines += [
            f"{_header_case(name)}: {value.decode('latin-1')}"
            for name, value in result.headers
            if name.startswith(b"guardrail-")
        ]
        out.write(("\n".join(lines) + "\n\n").encode("latin-1"))
    out.write(result.body)
    out.flush()
    return 0


def _header_case(name: bytes) -> str:
    """`guardrail-decision` as `Guardrail-Decision`, the spelling docs/integrate.md uses."""
    return "-".join(part.capitalize() for part in name.decode("latin-1").split("-"))


# What a user can get wrong in the files and flags they give: said in one line (a policy: every problem), no
# traceback. pydantic's ValidationError is a ValueError.
_USER_ERRORS = (PolicyError, InvalidControls, ValueError, LookupError, OSError, GuardrailError)


def _overlay(url: str | None) -> Overlay:
    """The reviewers' decisions in force in the store at `url` (none without one)."""
    from guardrail.review import EMPTY_OVERLAY
    from guardrail.review_commands import read_overlay

    return read_overlay(url) if url is not None else EMPTY_OVERLAY


def _refused(command: str, exc: Exception) -> int:
    if isinstance(exc, PolicyError):
        print(exc.report(), file=sys.stderr)
    elif isinstance(exc, InvalidControls):
        print(f"guardrail {command}: --controls: {exc}", file=sys.stderr)
    else:
        print(f"guardrail {command}: {exc}", file=sys.stderr)
    return 1


def _scenario(args: argparse.Namespace, request: dict[str, Any]) -> Scenario:
    """The user and request the flags describe."""
    from guardrail.authoring.scenario import Scenario

    return Scenario.model_validate(
        {
            "controls": _read_json(args.controls, "--controls") if args.controls else None,
            "anonymous": args.anonymous,
            "request": request,
            "route": args.route,
        }
    )


def _read_json(where: str, what: str) -> Any:
    text = sys.stdin.read() if where == "-" else open(where, encoding="utf-8").read()  # noqa: SIM115
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} ({where}) is not JSON: {exc}") from None
