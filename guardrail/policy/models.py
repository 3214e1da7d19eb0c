"""The policy file, as pydantic models.

Every model forbids unknown keys (a typo must not silently switch a rule off) and is frozen
(a loaded policy is shared by every request; nobody may change it under their feet).
Cross-references between sections are checked in `checks.py`, not here, so that a file
with several mistakes gets all of them reported at once.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator, model_validator

# A category or signal id: lowercase words joined by `_`, dotted for sub-categories.
Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$", max_length=100)]
Locale = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
Labels = dict[Locale, Annotated[str, StringConstraints(min_length=1, max_length=80)]]
# An HTTP header name is a token (RFC 9110 §5.6.2), and so is a cookie name (RFC 6265 §4.1.1).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Characters a route's path cannot hold: requests are matched without `;` parameters, percent-encodings
# decoded, and a backslash is a separator to some servers.
_NOT_IN_PATHS = frozenset(";%\\?#")
# The most decision records a store keeps per user, whatever the policy: `GET /v1/export` asks for this
# many, since after a reload the running store keeps the bound it was made with.
MAX_DECISIONS_PER_USER = 1000


def _token(value: str, what: str) -> str:
    if not _TOKEN.fullmatch(value):
        example = "euconsent-v2" if what == "cookie" else "x-user-id"
        raise ValueError(
            f"{value!r} is not a {what} name, so it would never match a request; "
            f"use letters, digits and - (as in {example})"
        )
    return value


def _header_name(value: str) -> str:
    name = _token(value, "header").lower()
    if "_" in name:
        # Servers that read `_` as `-` would take it for the `-` spelling, so no request keeps one.
        raise ValueError(
            f"{value!r} has a _, and the guardrail drops every header whose name has one, so it would never "
            f"be read; use - (as in {name.replace('_', '-')})"
        )
    return name


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JwtSettings(Model):
    key_env: str = "GUARDRAIL_JWT_KEY"
    algorithms: list[Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]] = Field(
        default=["HS256"], min_length=1
    )
    audience: str | None = None
    issuer: str | None = None
    age_claim: str | None = None
    # The issuer's public keys, fetched and refetched as it rotates them (guardrail/jwks.py), instead of
    # one key in `key_env`. Its algorithms are then RS256 unless the policy lists others.
    jwks_url: str | None = None
    # How far exp, nbf and iat may be off, for clocks that disagree a little.
    leeway_seconds: Annotated[float, Field(ge=0, le=300)] = 0

    @model_validator(mode="before")
    @classmethod
    def _public_key_default(cls, data: Any) -> Any:
        # A key set publishes public keys: the HMAC default would verify nothing.
        if isinstance(data, dict) and data.get("jwks_url") is not None and "algorithms" not in data:
            return {**data, "algorithms": ["RS256"]}
        return data

    @field_validator("jwks_url")
    @classmethod
    def _key_set_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        why = _unsafe_key_set_url(value)
        if why is not None:
            raise ValueError(
                f"{value!r} {why}; write the https URL your issuer publishes its keys at "
                "(such as https://issuer.example/.well-known/jwks.json; http only for a loopback host)"
            )
        return value


def _unsafe_key_set_url(url: str) -> str | None:
    """Why keys may not be fetched from `url`, or None. Plain http lets anyone on the path hand over
    keys that sign any token, so it is only for a loopback host (a test's own server)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        return "is not a URL"
    if not host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "has credentials in it"
    if parts.scheme == "https":
        return None
    if parts.scheme != "http":
        return "is not an https URL"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return None if loopback else "is http, not https, and its host is not loopback"


class Identity(Model):
    # `callable`: the function passed as `identify=` to the middleware (guardrail/identity.py).
    source: Literal["header", "jwt", "scope", "callable"] = "header"
    header: str = "x-user-id"
    age_header: str | None = None
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    jwt: JwtSettings | None = None

    @field_validator("header", "age_header")
    @classmethod
    def _lowercase_header(cls, value: str | None) -> str | None:
        # ASGI gives header names in lowercase; comparing lowercase names is then one `==`.
        return _header_name(value) if value is not None else None

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"{network!r} is not an IP network; write an address or a CIDR block such as 10.0.0.0/8 or ::1/128"
                ) from None
        return value


class Purpose(Model):
    tcf_purposes: list[Annotated[int, Field(ge=1, le=24)]] = Field(default_factory=list)
    default: Literal["granted", "denied"] = "denied"
    follows_gpc: bool = False
    # What the controls page shows next to the consent checkbox ("suggestions picked for you").
    label: Labels | None = None


class Tcf(Model):
    cookie: str | None = "euconsent-v2"
    header: str | None = None
    query: str | None = None
    vendor_id: Annotated[int, Field(ge=1)] | None = None

    @field_validator("cookie", "header")
    @classmethod
    def _names(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return _header_name(value) if info.field_name == "header" else _token(value, "cookie")


class Signal(Model):
    purpose: Identifier
    sensitivity: Annotated[int, Field(ge=0, le=3)] = 1
    sale_or_share: bool = False
    third_party: bool = False
    label: Labels


class Category(Model):
    # None: as the parent category says (a sub-category of `health` is sensitive too);
    # an explicit false under a sensitive parent makes an exception.
    sensitive: bool | None = None
    label: Labels


class Weights(Model):
    sensitive_category: Annotated[int, Field(ge=0, le=100)] = 50
    signal_sensitivity: Annotated[int, Field(ge=0, le=100)] = 10
    fresh_activity: Annotated[int, Field(ge=0, le=100)] = 20
    inferred: Annotated[int, Field(ge=0, le=100)] = 15
    third_party: Annotated[int, Field(ge=0, le=100)] = 20


class Invasiveness(Model):
    weights: Weights = Field(default_factory=Weights)
    fresh_activity_seconds: Annotated[float, Field(ge=0)] = 900
    discreet_at: Annotated[int, Field(ge=0, le=101)] = 30
    hide_at: Annotated[int, Field(ge=0, le=101)] = 70


class Minors(Model):
    age_of_majority: Annotated[int, Field(ge=1, le=30)] = 18


class Fields(Model):
    id: str = "id"
    categories: str = "categories"
    signals: str = "signals"
    signal_age_seconds: str = "signal_age_seconds"
    inferred: str = "inferred"
    # The item's display field, if any: decision records then keep each item's title for its receipts.
    title: str | None = None


class NonPersonalized(Model):
    rewrite_to: Annotated[str, StringConstraints(pattern=r"^/")]
    strip_headers: list[str] = Field(default_factory=lambda: ["cookie", "authorization"])

    @field_validator("strip_headers")
    @classmethod
    def _lowercase(cls, value: list[str]) -> list[str]:
        return [_token(name, "header").lower() for name in value]


class Route(Model):
    path: str
    methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]] = Field(default=["GET"], min_length=1)
    items: Annotated[str, StringConstraints(pattern=r"^(/.*)?$")] = "/items"
    fields: Fields = Field(default_factory=Fields)
    default_signals: list[Identifier] = Field(default_factory=list)
    non_personalized: NonPersonalized | None = None

    @field_validator("path")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        # Requests are matched after their spelling is normalized (guardrail.routes); a route written
        # otherwise would match nothing.
        why = _unplain_path(value)
        if why is not None:
            raise ValueError(
                f"{value!r} {why}; write the path as servers route it, such as /recommendations "
                "(a trailing * makes it a prefix, as in /feed/*)"
            )
        return value


def _unplain_path(path: str) -> str | None:
    if not path.startswith("/"):
        return "does not start with /"
    if "*" in path[:-1]:
        return "has a * before its end"
    if any(character in _NOT_IN_PATHS or not character.isprintable() for character in path):
        return "has a character requests are not matched by (one of ;%\\?# or a control character)"
    body = path.removesuffix("*")
    segments = body.split("/")[1:]
    if body.endswith("/"):
        segments.pop()  # a trailing slash
    if any(segment in ("", ".", "..") for segment in segments):
        return "has an empty, . or .. segment"
    return None


class Review(Model):
    """Who works the review queue, and what besides unknown categories and reports goes in it (docs/review.md).

    A reviewer is named by the policy's identity source, as users are: a listed user id, or, with
    `identity.source: jwt`, a token whose `role_claim` holds `role` (a string or a list of strings)."""

    reviewers: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(default_factory=list)
    role_claim: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    role: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    # Items scoring this or more (and so below hide_at, or they are hidden) are offered to review.
    invasiveness_at: Annotated[int, Field(ge=0, le=100)] | None = None
    # The most queued entries; beyond it the oldest of those seen least often are dropped and counted.
    max_entries: Annotated[int, Field(ge=10, le=100_000)] = 1000

    @field_validator("reviewers")
    @classmethod
    def _exact_ids(cls, value: list[str]) -> list[str]:
        for reviewer in value:
            if not reviewer.isprintable() or reviewer != reviewer.strip():
                raise ValueError(
                    f"{reviewer!r} cannot be a user id: ids are taken exactly as sent, so write it without "
                    "control characters or surrounding spaces"
                )
        return value

    @model_validator(mode="after")
    def _role_pair(self) -> Review:
        if (self.role_claim is None) != (self.role is None):
            raise ValueError(
                "role_claim and role go together: write both (role_claim: roles, role: reviewer) or neither"
            )
        if not self.reviewers and self.role is None:
            raise ValueError("name at least one reviewer: reviewers: [user id, ...], or role_claim and role with jwt")
        return self


class Policy(Model):
    version: Literal[1]
    policy_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    prefix: Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._~/-]*[^/]$")] | None = "/guardrail"
    mode: Literal["enforce", "shadow"] = "enforce"
    fail_mode: Literal["closed", "open"] = "closed"
    store_timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 20
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    identity: Identity = Field(default_factory=Identity)
    locales: list[Locale] = Field(default=["en", "ko"], min_length=1)
    default_locale: Locale = "en"
    purposes: dict[Identifier, Purpose] = Field(min_length=1)
    tcf: Tcf = Field(default_factory=Tcf)
    signals: dict[Identifier, Signal] = Field(min_length=1)
    categories: dict[Identifier, Category] = Field(default_factory=dict)
    invasiveness: Invasiveness = Field(default_factory=Invasiveness)
    minors: Minors = Field(default_factory=Minors)
    # A category id the policy does not define (after NFKC, trimming and lowercasing, docs/architecture.md §2):
    # shown discreetly, hidden, or kept as if harmless.
    unknown_categories: Literal["discreet", "hide", "keep"] = "discreet"
    decision_retention_days: Annotated[float, Field(gt=0, le=366)] = 7
    # How often one user may change their controls, in the `limits` notation ("30/minute").
    controls_rate_limit: str = "30/minute"
    decisions_per_user: Annotated[int, Field(ge=1, le=MAX_DECISIONS_PER_USER)] = 50
    # /Recommendations is the route /recommendations (as many servers route it); false: case counts.
    case_insensitive_paths: bool = True
    # Category ids read as another, defined one (`sportsbook: gambling`): what reviewers decide (docs/review.md).
    # Its keys are spellings upstreams send (matched after NFKC, trimming, lowercasing), not only identifiers.
    category_aliases: dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], Identifier] = Field(
        default_factory=dict
    )
    # Item ids hidden for everyone, reason blocked_by_review; an integer id matches its digits.
    blocked_items: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(default_factory=list)
    # Who works the human review queue (docs/review.md); None: nobody, and its API answers 404.
    review: Review | None = None
    routes: list[Route] = Field(min_length=1)

    @field_validator("category_aliases")
    @classmethod
    def _aliases_as_matched(cls, value: dict[str, str]) -> dict[str, str]:
        for alias in value:
            spelled = unicodedata.normalize("NFKC", alias).strip().lower()
            if spelled != alias:
                raise ValueError(
                    f"{alias!r} would never match: categories are matched after NFKC, trimming and lowercasing, "
                    f"so write {spelled!r}"
                )
        return value

    @field_validator("prefix")
    @classmethod
    def _plain_prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        why = "has a *" if "*" in value else _unplain_path(value)
        if why is not None:
            raise ValueError(f"{value!r} {why}; write the prefix as servers route it, such as /guardrail")
        return value

    @field_validator("controls_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate; write it like 30/minute or 5/second") from None
        return value
