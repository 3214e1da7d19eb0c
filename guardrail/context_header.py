"""`Guardrail-Context` (docs/integrate.md): what the guardrail decided for a request, told to the upstream before it
runs, so that a recommender that honours it can fill a page with items that will be kept.

An RFC 8941 dictionary, its lists sorted so that the same decision is always the same bytes:
`personalized=?1, signals=("location_coarse" "watch_history"), exclude=("dating" "gambling"), locale="en"`.
- `signals`: the signals that may be used for this user now;
- `exclude`: the categories muted or snoozed, and the sensitive ones not opted into (each covers the
  categories under it, docs/architecture.md §2);
- `locale`: the language the explanations are in.
A request that is not personalized gets only `personalized=?0`: no personal data at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from guardrail.engine import UserContext

NOT_PERSONALIZED = b"personalized=?0"


def context_header(ctx: UserContext) -> bytes:
    if not ctx.personalized_allowed:
        return NOT_PERSONALIZED
    compiled = ctx.compiled
    signals = [name for name, reasons in ctx.signal_reasons.items() if not reasons]
    # While degraded, an opt-in read from a cache is not enough (as the engine decides).
    opt_ins = frozenset() if ctx.degraded else ctx.sensitive_opt_ins
    excluded = set(ctx.muted)
    excluded.update(
        category
        for category in compiled.sensitive_categories
        if not any(prefix in opt_ins for prefix in compiled.prefixes(category))
    )
    members = [
        "personalized=?1",
        f"signals={_inner_list(signals)}",
        f"exclude={_inner_list(excluded)}",
    ]
    if _is_sf_string(ctx.locale):
        members.append(f"locale={_sf_string(ctx.locale)}")
    return ", ".join(members).encode("ascii")


def _inner_list(values: Iterable[str]) -> str:
    # A value that is not an sf-string cannot be said in the header; policy ids always are.
    return "(" + " ".join(_sf_string(value) for value in sorted(values) if _is_sf_string(value)) + ")"


def _is_sf_string(value: str) -> bool:
    """RFC 8941 §3.3.3: printable ASCII only (0x20 to 0x7E)."""
    return value.isascii() and value.isprintable()


def _sf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
