"""`guardrail alerts`: the Prometheus alerting rules (config/alerts.yml) with every alert's `runbook_url`
built from one base URL (docs/operations.md#alerts-and-dashboard).

`runbook_url(base, alert)` is `base#<alert in lower case>` (the runbook's section anchors in
docs/operations.md), or `base` with `{alert}` replaced by that name for a runbook with one page per alert.
config/alerts.yml is the output for `DEFAULT_RUNBOOK_BASE`, and a test keeps it so.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

# The runbook as the repository publishes it (docs/operations.md, Runbook).
DEFAULT_RUNBOOK_BASE = (
    "https://github.com/personalization-guardrail/personalization-guardrail/blob/main/docs/operations.md"
)
ALERT_PLACEHOLDER = "{alert}"

_ALERT = re.compile(r"^\s*- alert: (\w+)\s*$")
_RUNBOOK_URL = re.compile(r"^(\s*)runbook_url: ")
# A URL goes into the rules as a YAML string and then through Prometheus's templates: neither a quote,
# a backslash, a brace (other than `{alert}`) nor a space may change what it means.
_UNSAFE = re.compile(r"[\s\"'\\{}<>`]")


class RunbookBaseError(ValueError):
    """A runbook base URL the rules cannot be built from; the message says how to fix it."""


def rules_file() -> Path:
    """The packaged copy of config/alerts.yml, or the file itself in a source checkout."""
    packaged = resources.files("guardrail").joinpath("alerts.yml")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / "config" / "alerts.yml"


def check_runbook_base(base: str) -> str:
    """`base` if every alert's runbook URL can be built from it, else `RunbookBaseError`."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RunbookBaseError(f"{base!r} is not an http:// or https:// URL; give the runbook page's full address")
    if _UNSAFE.search(base.replace(ALERT_PLACEHOLDER, "")):
        raise RunbookBaseError(
            f"{base!r} holds a space, quote, backslash or brace; percent-encode it (only {ALERT_PLACEHOLDER} may stay)"
        )
    if parts.fragment and ALERT_PLACEHOLDER not in base:
        raise RunbookBaseError(
            f"{base!r} already has a #fragment, so the alert's anchor cannot follow; "
            f"drop it, or put {ALERT_PLACEHOLDER} where the alert's name goes"
        )
    return base


def runbook_url(base: str, alert: str) -> str:
    name = alert.lower()
    return base.replace(ALERT_PLACEHOLDER, name) if ALERT_PLACEHOLDER in base else f"{base}#{name}"


def alert_rules(runbook_base: str = DEFAULT_RUNBOOK_BASE, rules: str | None = None) -> str:
    """The rules file (`rules`, by default the packaged one) with each alert's `runbook_url` line
    rebuilt from `runbook_base`; everything else, comments included, as it is."""
    check_runbook_base(runbook_base)
    text = rules if rules is not None else rules_file().read_text(encoding="utf-8")
    alert: str | None = None
    lines = []
    for line in text.splitlines(keepends=True):
        started = _ALERT.match(line)
        if started:
            alert = started.group(1)
        found = _RUNBOOK_URL.match(line)
        if found and alert is not None:
            line = f'{found.group(1)}runbook_url: "{runbook_url(runbook_base, alert)}"\n'
        lines.append(line)
    return "".join(lines)
