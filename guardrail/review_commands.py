"""`guardrail review export` and `guardrail review overlay` (docs/review.md): the audit as JSON lines, and the
decisions in force as a policy fragment a team can merge into its policy file."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any, TextIO

from guardrail.errors import GuardrailError, StoreError

if TYPE_CHECKING:
    from guardrail.review import Overlay
    from guardrail.store import Store


def add_parsers(commands: Any) -> None:
    review = commands.add_parser("review", help="the human review queue's audit and decisions")
    verbs = review.add_subparsers(dest="review_command", required=True, metavar="COMMAND")
    export = verbs.add_parser(
        "export",
        help="write every reviewer decision as JSON lines, oldest first",
        description="Write the review audit, one JSON object a line, oldest first: at, reviewer, entry, kind, "
        "decision, note, details. Read from the shared store; exit 1 if it cannot be read.",
    )
    overlay = verbs.add_parser(
        "overlay",
        help="print the reviewers' decisions in force as a policy fragment (YAML)",
        description="Print the decisions in force (new categories, category_aliases, blocked_items) as YAML to "
        "merge into the policy file; once merged, the policy file says so itself.",
    )
    for verb in (export, overlay):
        verb.add_argument("--store", help="the store URL (default: GUARDRAIL_STORE)")
    export.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")


def run(args: argparse.Namespace) -> int:
    # Imported here: `guardrail --help` and the other verbs do not load the store.
    from guardrail.settings import Settings
    from guardrail.store import create_store

    if args.store:
        url = args.store
    else:
        try:
            url = Settings.load().store.get_secret_value()
        except GuardrailError as exc:
            print(f"guardrail review {args.review_command}: {exc}", file=sys.stderr)
            return 2
    if url.startswith("memory:"):
        print(
            f"guardrail review {args.review_command}: the memory store keeps nothing between processes; "
            "give --store redis://... (or set GUARDRAIL_STORE) to read the shared one",
            file=sys.stderr,
        )
        return 1
    try:
        found = asyncio.run(_read(args.review_command, create_store(url, timeout=5.0)))
    except (GuardrailError, StoreError) as exc:
        print(f"guardrail review {args.review_command}: {exc}", file=sys.stderr)
        return 1
    if args.review_command == "overlay":
        import yaml

        sys.stdout.write(yaml.safe_dump(found, allow_unicode=True, sort_keys=False) if found else "{}\n")
    elif args.output is None:
        write_audit(found, sys.stdout)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            write_audit(found, out)
    return 0


def read_overlay(url: str) -> Overlay:
    """The decisions in force in the store at `url`, read once (for `guardrail explain` and `diff`)."""
    from guardrail.store import create_store

    if url.startswith("memory:"):
        raise GuardrailError(f"--store {url}: the memory store keeps nothing between processes; give redis://...")
    return asyncio.run(_read("overlay-object", create_store(url, timeout=5.0)))  # type: ignore[no-any-return]


async def _read(verb: str, store: Store) -> Any:
    """The audit (`export`), or the policy fragment of the decisions in force (`overlay`)."""
    try:
        queue = store.review_queue()
        if verb == "overlay-object":
            return await queue.refresh()
        if verb == "overlay":
            return (await queue.refresh()).fragment()
        return await queue.audit()
    finally:
        await store.aclose()


def write_audit(audit: Any, out: TextIO) -> None:
    import orjson

    for decision in audit:
        out.write(orjson.dumps(decision.to_json()).decode() + "\n")
