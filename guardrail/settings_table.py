"""The table of every setting in docs/configuration.md, made from `guardrail.settings.Settings`, so that the
docs say what the code reads. `python -m guardrail.settings_table` prints it; `--write FILE` replaces the
table between its markers in FILE (tests/test_settings.py fails when the docs' table differs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from guardrail.settings import Settings, is_secret, variable

BEGIN = (
    "<!-- settings table: generated from guardrail/settings.py by `python -m guardrail.settings_table`; do not edit -->"
)
END = "<!-- end of the settings table -->"
# Read before settings can be loaded, from the environment only (see the field's description).
ENVIRONMENT_ONLY = frozenset({"pure_python", "secrets_dir"})


def markdown() -> str:
    rows = ["| variable | default | what |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        notes = []
        if is_secret(Settings, name):
            notes.append("**secret**")
        if name in ENVIRONMENT_ONLY:
            notes.append("environment only")
        what = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{variable(name)}` | {_default(field.default)} | {what}{_notes(notes)} |")
    return "\n".join(rows)


def _default(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def _notes(notes: list[str]) -> str:
    return f" ({', '.join(notes)})" if notes else ""


def section(text: str) -> str:
    """The generated table in a document: what lies between the markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the document has no settings table between {BEGIN!r} and {END!r}")
    return text[start + len(BEGIN) : end].strip("\n")


def write(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    section(text)  # (there is one)
    before, _, rest = text.partition(BEGIN)
    path.write_text(f"{before}{BEGIN}\n{markdown()}\n{END}{rest.partition(END)[2]}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guardrail.settings_table", description=__doc__)
    parser.add_argument("--write", metavar="FILE", type=Path, help="replace the table in FILE instead of printing it")
    args = parser.parse_args(argv)
    if args.write is None:
        print(markdown())
        return 0
    try:
        write(args.write)
    except (OSError, ValueError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
