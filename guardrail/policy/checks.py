"""Cross-references between sections of a policy file.

They run on the raw mapping, beside (not after) the schema validation, so that a file with a
typo in `signals` and an unknown purpose in a route gets both reported in one go. Each check is
defensive about shapes: a section of the wrong type is the schema's error to report, not ours.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardrail.messages import AVAILABLE_LOCALES

Issue = tuple[str, str]  # (key path, message)
_ANY_SPELLING = {True: "in any case, with or without a trailing slash", False: "with or without a trailing slash"}


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _names(names: Any) -> str:
    return ", ".join(sorted(str(name) for name in names)) or "(none defined)"


def cross_reference_issues(data: Mapping[str, Any]) -> Iterator[Issue]:
    purposes = _section(data, "purposes")
    signals = _section(data, "signals")
    categories = _section(data, "categories")
    raw_locales = data.get("locales", ["en", "ko"])
    locales = [loc for loc in raw_locales if isinstance(loc, str)] if isinstance(raw_locales, list) else []

    for index, locale in enumerate(locales):
        if locale not in AVAILABLE_LOCALES:
            yield (
                f"locales[{index}]",
                f"no messages exist for locale {locale!r}; available: {_names(AVAILABLE_LOCALES)}",
            )
    default_locale = data.get("default_locale", "en")
    if locales and isinstance(default_locale, str) and default_locale not in locales:
        yield (
            "default_locale",
            f"{default_locale!r} is not one of the enabled locales ({_names(locales)})",
        )

    for name, purpose in purposes.items():
        if isinstance(purpose, Mapping):
            yield from _label_issues(f"purposes.{name}.label", purpose.get("label"), locales)

    for name, signal in signals.items():
        if not isinstance(signal, Mapping):
            continue
        purpose = signal.get("purpose")
        if isinstance(purpose, str) and purpose not in purposes:
            yield (
                f"signals.{name}.purpose",
                f"unknown purpose {purpose!r}; defined purposes: {_names(purposes)}",
            )
        yield from _label_issues(f"signals.{name}.label", signal.get("label"), locales)

    for name, category in categories.items():
        if not isinstance(category, Mapping):
            continue
        parent = str(name).rpartition(".")[0]
        if parent and parent not in categories:
            yield (
                f"categories.{name}",
                f"parent category {parent!r} is not defined; define it above its sub-categories",
            )
        yield from _label_issues(f"categories.{name}.label", category.get("label"), locales)

    for alias, target in _section(data, "category_aliases").items():
        if alias in categories:
            yield (
                f"category_aliases.{alias}",
                f"{alias!r} is a defined category; an alias names a category the policy lacks",
            )
        elif isinstance(target, str) and target not in categories:
            yield (
                f"category_aliases.{alias}",
                f"unknown category {target!r}; an alias is read as a defined category: {_names(categories)}",
            )

    invasiveness = _section(data, "invasiveness")
    discreet_at, hide_at = invasiveness.get("discreet_at", 30), invasiveness.get("hide_at", 70)
    if isinstance(discreet_at, int) and isinstance(hide_at, int) and discreet_at > hide_at:
        yield (
            "invasiveness.discreet_at",
            f"must not be above hide_at ({discreet_at} > {hide_at}); an item is made discreet before it is hidden",
        )

    review = _section(data, "review")
    if review.get("role_claim") is not None and _section(data, "identity").get("source") != "jwt":
        yield (
            "review.role_claim",
            "a role is read from a signed token, so it needs identity.source: jwt; otherwise list reviewers by id",
        )
    review_at = review.get("invasiveness_at")
    if isinstance(review_at, int) and isinstance(hide_at, int) and review_at >= hide_at:
        yield (
            "review.invasiveness_at",
            f"must be below hide_at ({review_at} >= {hide_at}): items scoring hide_at or more are hidden already",
        )

    identity = _section(data, "identity")
    if identity.get("source") == "jwt" and not isinstance(identity.get("jwt"), Mapping):
        yield "identity.jwt", "source is 'jwt', so add jwt: {key_env or jwks_url, algorithms, audience, issuer}"
    jwt = _section(identity, "jwt")
    yield from _algorithm_mix_issues(jwt.get("algorithms"))
    yield from _key_set_issues(jwt)

    routes = data.get("routes")
    seen: dict[str, str] = {}
    any_case = data.get("case_insensitive_paths", True) is not False
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, Mapping):
            continue
        path = route.get("path")
        if isinstance(path, str):
            # Requests match with or without a trailing slash, and in any case unless the policy says not.
            same = path.rstrip("/") or "/"
            same = same.lower() if any_case else same
            if same in seen:
                also = "" if seen[same] == path else f" (as {seen[same]!r}: paths match {_ANY_SPELLING[any_case]})"
                yield f"routes[{index}].path", f"{path!r} is guarded twice{also}; merge the two entries"
            seen.setdefault(same, path)
        defaults = route.get("default_signals")
        for position, signal_name in enumerate(defaults if isinstance(defaults, list) else []):
            if isinstance(signal_name, str) and signal_name not in signals:
                yield (
                    f"routes[{index}].default_signals[{position}]",
                    f"unknown signal {signal_name!r}; defined signals: {_names(signals)}",
                )


def _algorithm_mix_issues(algorithms: Any) -> Iterator[Issue]:
    """HMAC beside public-key algorithms is algorithm confusion waiting to happen: a token naming HS256
    would be checked with the public key as its secret, and anyone can sign with a public key."""
    names = sorted({name for name in algorithms if isinstance(name, str)}) if isinstance(algorithms, list) else []
    hmac = [name for name in names if name.startswith("HS")]
    public_key = [name for name in names if not name.startswith("HS")]
    if hmac and public_key:
        yield (
            "identity.jwt.algorithms",
            f"mixes HMAC ({', '.join(hmac)}) with public-key algorithms ({', '.join(public_key)}): one key cannot "
            "verify both, and a token that names the other kind invites algorithm confusion; "
            "list only the kind your key is for",
        )


def _key_set_issues(jwt: Mapping[str, Any]) -> Iterator[Issue]:
    """Keys from a key set or one key from the environment: never both, so that which key verifies a
    token is never in doubt; and a key set holds public keys, which HMAC algorithms cannot use."""
    if jwt.get("jwks_url") is None:
        return
    if "key_env" in jwt:
        yield (
            "identity.jwt.key_env",
            "jwks_url and key_env both name where the keys come from; keep jwks_url for an issuer that "
            "publishes its keys (and rotates them), or key_env for one key you hold",
        )
    algorithms = jwt.get("algorithms")
    hmac = (
        sorted(name for name in algorithms if isinstance(name, str) and name.startswith("HS"))
        if isinstance(algorithms, list)
        else []
    )
    if hmac:
        yield (
            "identity.jwt.algorithms",
            f"{', '.join(hmac)} with jwks_url: a key set publishes public keys, and an HMAC secret must never be "
            "published; list the public-key algorithms your issuer signs with (such as RS256 or ES256)",
        )


def _label_issues(path: str, label: Any, locales: list[str]) -> Iterator[Issue]:
    if not isinstance(label, Mapping):
        return
    missing = [locale for locale in locales if locale not in label]
    if missing:
        yield (
            path,
            f"missing {_names(missing)}; every enabled locale ({_names(locales)}) needs a label",
        )
