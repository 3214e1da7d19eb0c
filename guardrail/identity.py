"""Who is asking: identity only from the policy's trusted source (design §7).

- `header`: `identity.header` (and `identity.age_header`) count only when the TCP peer is one of
  `identity.trusted_proxies`; from anyone else the caller is anonymous, whatever the header says.
- `jwt`: a bearer token, verified with the key in the environment variable `jwt.key_env`, with the
  algorithms the policy names (never the one the token names), `exp` required, and the audience
  and issuer checked when the policy gives them. Anything wrong: anonymous.
- `scope`: `scope["user"]` as Starlette's `AuthenticationMiddleware` leaves it.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass
from typing import Any

from guardrail.errors import GuardrailError
from guardrail.optional import load
from guardrail.policy.models import Identity as IdentitySettings
from guardrail.policy.models import JwtSettings

MAX_USER_ID_LENGTH = 200
MAX_TOKEN_LENGTH = 8192
_AUTHORIZATION = b"authorization"


@dataclass(frozen=True, slots=True)
class Caller:
    user: str | None = None
    age: int | None = None


ANONYMOUS = Caller()


class IdentityResolver:
    def __init__(self, settings: IdentitySettings) -> None:
        self.source = settings.source
        self.header = settings.header.encode("latin-1")
        self.age_header = settings.age_header.encode("latin-1") if settings.age_header else None
        self._networks = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]
        self._trusted_hosts: dict[str, bool] = {}
        self.tokens = TokenVerifier(settings.jwt or JwtSettings()) if settings.source == "jwt" else None
        # The header names this resolver wants from a request, read in the same pass as the others.
        if self.tokens is not None:
            self.wanted = frozenset({_AUTHORIZATION})
        else:
            self.wanted = frozenset(h for h in (self.header, self.age_header) if h is not None)

    @property
    def identifying_headers(self) -> frozenset[bytes]:
        """What a request to the non-personalized route must not carry."""
        return self.wanted | {self.header, _AUTHORIZATION}

    def is_trusted(self, scope: Any) -> bool:
        client = scope.get("client")
        if not client:
            return False
        host = client[0]
        trusted = self._trusted_hosts.get(host)
        if trusted is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                trusted = False  # a unix socket or a test client's made-up name is not an address
            else:
                trusted = any(address in network for network in self._networks)
            if len(self._trusted_hosts) < 10_000:
                self._trusted_hosts[host] = trusted
        return trusted

    def resolve(self, scope: Any, headers: dict[bytes, bytes]) -> Caller:
        if self.tokens is not None:
            return self.tokens.caller(headers.get(_AUTHORIZATION))
        if self.source == "scope":
            return _from_scope_user(scope)
        if self.source != "header" or not self.is_trusted(scope):
            return ANONYMOUS
        user = _clean_user_id(headers.get(self.header))
        if user is None:
            return ANONYMOUS
        age = _parse_age(headers.get(self.age_header)) if self.age_header else None
        return Caller(user, age)


def _clean_user_id(raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        user = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not user or len(user) > MAX_USER_ID_LENGTH or not user.isprintable():
        return None
    return user


def _parse_age(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 3:
        return None
    return int(text)


def _from_scope_user(scope: Any) -> Caller:
    # Starlette's AuthenticationMiddleware puts a BaseUser in scope["user"].
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return ANONYMOUS
    try:
        identity = user.identity
    except NotImplementedError:  # Starlette's SimpleUser has a display name, not an identity
        identity = getattr(user, "display_name", "")
    name = _clean_user_id(str(identity or "").encode())
    age = getattr(user, "age", None)
    return Caller(name, age if isinstance(age, int) and not isinstance(age, bool) else None)


class TokenVerifier:
    """Verifies bearer tokens; a verified token is remembered until it expires (bounded)."""

    def __init__(self, settings: JwtSettings) -> None:
        self.jwt = load("jwt", extra="jwt", feature="identity.source: jwt")
        key = os.environ.get(settings.key_env)
        if not key:
            raise GuardrailError(
                f"identity.source is jwt but the environment variable {settings.key_env} is not set; "
                "set it to the HMAC secret or the PEM public key that verifies your tokens"
            )
        self.key = key
        self.algorithms = list(settings.algorithms)
        self.audience = settings.audience
        self.issuer = settings.issuer
        self.age_claim = settings.age_claim
        self._verified: dict[bytes, tuple[float, Caller]] = {}

    def caller(self, authorization: bytes | None) -> Caller:
        if not authorization or len(authorization) > MAX_TOKEN_LENGTH:
            return ANONYMOUS
        found = self._verified.get(authorization)
        if found is not None:
            if time.time() < found[0]:
                return found[1]
            del self._verified[authorization]
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return ANONYMOUS
        try:
            claims = self.jwt.decode(
                token.strip(),
                self.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except (self.jwt.InvalidTokenError, ValueError, TypeError):
            return ANONYMOUS
        user = _clean_user_id(str(claims["sub"]).encode())
        if user is None:
            return ANONYMOUS
        age = claims.get(self.age_claim) if self.age_claim else None
        caller = Caller(user, age if isinstance(age, int) and not isinstance(age, bool) else None)
        try:
            expires = float(claims["exp"])
        except OverflowError:  # an integer past any float: the token never expires in practice
            return caller  # verified, but not remembered
        if len(self._verified) >= 10_000:
            self._verified.clear()
        self._verified[authorization] = (expires, caller)
        return caller
