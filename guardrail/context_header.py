"""`Guardrail-Context` (docs/integrate.md): what the guardrail decided for a request, told to the upstream before it
runs, so that a recommender that honours it can fill a page with items that will be kept.

An RFC 8941 dictionary, its lists sorted so that the same decision is always the same bytes:
`personalized=?1, signals=("location_coarse" "watch_history"), exclude=("dating" "gambling"), locale="en"`.
- `signals`: the signals that may be used for this user now;
- `exclude`: the categories muted or snoozed, and the sensitive ones not opted into (each covers the
  categories under it, docs/architecture.md §2);
- `locale`: the language the explanations are in.
A request that is not personalized gets only `personalized=?0`: no personal data at all.

`GuardrailContext` is the same facts as a value: what `guardrail.install(...).context(request)` returns in
process, and what `parse_guardrail_context` reads back from the header (a recommender in Python uses it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from guardrail.engine import UserContext

NOT_PERSONALIZED = b"personalized=?0"
# One member of the dictionary as the guardrail writes it: a key, then `?0`/`?1`, an inner list of strings,
# or a string (RFC 8941 §3.2, §3.1.1, §3.3.3).
_MEMBER = re.compile(r'\s*([a-z*][a-z0-9_.*-]*)=(\?[01]|\((?:[^()"]|"(?:[^"\\]|\\.)*")*\)|"(?:[^"\\]|\\.)*")\s*')
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class GuardrailContext:
    """What the guardrail decided for a request, before the upstream runs.

    `personalized`: whether anything personal may be used at all (False: serve what everyone gets);
    `signals`: the signals that may be used; `exclude`: the categories (and those under them) whose items
    will be hidden; `locale`: the language of the explanations, if it can be said in the header."""

    personalized: bool
    signals: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    locale: str | None = None

    def excludes(self, category: str) -> bool:
        """Whether an item of `category` (the policy's spelling) will be hidden for this request."""
        return any(category == name or category.startswith(name + ".") for name in self.exclude)

    def header(self) -> bytes:
        """The `Guardrail-Context` value, the same bytes for the same facts."""
        if not self.personalized:
            return NOT_PERSONALIZED
        members = [
            "personalized=?1",
            f"signals={_inner_list(self.signals)}",
            f"exclude={_inner_list(self.exclude)}",
        ]
        if self.locale is not None and _is_sf_string(self.locale):
            members.append(f"locale={_sf_string(self.locale)}")
        return ", ".join(members).encode("ascii")


def guardrail_context(ctx: UserContext) -> GuardrailContext:
    """The facts of a user's context that the upstream may be told."""
    if not ctx.personalized_allowed:
        return GuardrailContext(False, locale=ctx.locale)
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
    return GuardrailContext(True, tuple(sorted(signals)), tuple(sorted(excluded)), ctx.locale)


def context_header(ctx: UserContext) -> bytes:
    return guardrail_context(ctx).header()


def parse_guardrail_context(value: bytes | str | None) -> GuardrailContext:
    """Read a `Guardrail-Context` header. A missing or unreadable one reads as not personalized: a
    recommender that cannot tell what is allowed serves what everyone gets (docs/integrate.md)."""
    if value is None:
        return GuardrailContext(False)
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    members: dict[str, str] = {}
    position = 0
    while position < len(text):
        found = _MEMBER.match(text, position)
        if found is None:
            return GuardrailContext(False)
        members.setdefault(found.group(1), found.group(2))
        position = found.end()
        if position < len(text):
            if text[position] != ",":
                return GuardrailContext(False)
            position += 1
    if members.get("personalized") != "?1":
        return GuardrailContext(False, locale=_string(members.get("locale")))
    return GuardrailContext(
        True,
        _strings(members.get("signals")),
        _strings(members.get("exclude")),
        _string(members.get("locale")),
    )


def _strings(inner_list: str | None) -> tuple[str, ...]:
    if inner_list is None or not inner_list.startswith("("):
        return ()
    return tuple(_unescape(part) for part in _STRING.findall(inner_list))


def _string(value: str | None) -> str | None:
    if value is None or not value.startswith('"'):
        return None
    return _unescape(value[1:-1])


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _inner_list(values: Iterable[str]) -> str:
    # A value that is not an sf-string cannot be said in the header; policy ids always are.
    return "(" + " ".join(_sf_string(value) for value in sorted(values) if _is_sf_string(value)) + ")"


def _is_sf_string(value: str) -> bool:
    """RFC 8941 §3.3.3: printable ASCII only (0x20 to 0x7E)."""
    return value.isascii() and value.isprintable()


def _sf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
