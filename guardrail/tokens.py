"""Bearer tokens (`identity.source: jwt`): verified with the policy's algorithms and key, or the issuer's key
set (guardrail/jwks.py); see guardrail/identity.py for the rules."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from guardrail.caching import BoundedCache
from guardrail.callers import ANONYMOUS, Caller, exact_user_str
from guardrail.errors import GuardrailError
from guardrail.jwks import KeySet
from guardrail.optional import load
from guardrail.policy.models import JwtSettings

logger = logging.getLogger("guardrail")

MAX_TOKEN_LENGTH = 8192
_COMMA = ord(",")  # `44 in value` is several times faster than `b"," in value`
# Verified tokens kept (until they expire): they come from clients.
TOKENS_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class KeyWanted:
    """A token signed with a key the key set does not hold (yet): its `kid`."""

    kid: str


class TokenVerifier:
    """Verifies bearer tokens; a verified token is remembered until it expires (bounded), and while the
    key that verified it is still in the issuer's key set."""

    def __init__(self, settings: JwtSettings, role_claim: str | None = None) -> None:
        self.role_claim = role_claim
        self.jwt = load("jwt", extra="jwt", feature="identity.source: jwt")
        self.keys: KeySet | None = None
        self.key: str | None = None
        if settings.jwks_url is not None:
            self.keys = KeySet(settings.jwks_url)
            self.algorithms: list[str] = list(settings.algorithms)  # each key's own algorithm must be one of them too
        else:
            from guardrail.settings import Settings

            key = Settings.load().secret(settings.key_env)
            if not key:
                raise GuardrailError(
                    f"identity.source is jwt but the environment variable {settings.key_env} is not set; "
                    "set it (or a file of that name in the secrets directory, docs/configuration.md) to the HMAC "
                    "secret or the PEM public key that verifies your tokens, or give identity.jwt.jwks_url"
                )
            self.algorithms = self._algorithms_for(key, settings)
            self.key = key
        self.audience = settings.audience
        self.issuer = settings.issuer
        self.age_claim = settings.age_claim
        self.leeway = settings.leeway_seconds
        # authorization -> (expires, caller, the key set's key that verified it, or None for `key_env`'s)
        self._verified: BoundedCache[bytes, tuple[float, Caller, Any]] = BoundedCache(TOKENS_REMEMBERED)

    def _algorithms_for(self, key: str, settings: JwtSettings) -> list[str]:
        """The policy's algorithms that this key can verify. A key that fits none is refused at start
        (every token would be refused); one that fits some is used with those only, so that a token
        naming another is refused as any algorithm the policy does not list; the log says so at start."""
        usable: list[str] = []
        unfit: list[str] = []
        reasons: list[str] = []
        available = self.jwt.algorithms.get_default_algorithms()
        for name in settings.algorithms:
            algorithm = available.get(name)
            if algorithm is None:  # PyJWT offers public-key algorithms only with `cryptography`
                load("cryptography", extra="jwt", feature=f"identity.jwt.algorithms {name}")
                unfit.append(name)
                reasons.append(f"{name}: this PyJWT does not offer it")
                continue
            try:
                algorithm.prepare_key(key)
            except (self.jwt.PyJWTError, ValueError, TypeError) as exc:
                unfit.append(name)
                reasons.append(f"{name}: {exc}")
            else:
                usable.append(name)
        if not usable:
            kind = "the HMAC secret" if unfit[0].startswith("HS") else "the PEM public key"
            raise GuardrailError(
                f"the key in the environment variable {settings.key_env} cannot verify any of "
                f"identity.jwt.algorithms ({'; '.join(reasons)}); set it to {kind} that verifies your tokens"
            )
        if unfit:
            logger.warning(
                "the key in %s cannot verify %s tokens, which are therefore refused (%s)",
                settings.key_env,
                ", ".join(unfit),
                "; ".join(reasons),
            )
        return usable

    def caller(self, authorization: bytes | None) -> Caller:
        """Who the token says, with the keys held now (a key set is not fetched: see `after_fetch`)."""
        found = self.check(authorization)
        return found if isinstance(found, Caller) else ANONYMOUS

    async def after_fetch(self, wanted: KeyWanted, authorization: bytes | None) -> Caller:
        """Who the token says once the key set is fetched for its `kid`, if the bounds allow a fetch."""
        assert self.keys is not None
        if await self.keys.fetch_for(wanted.kid) is None:
            return ANONYMOUS
        return self.caller(authorization)

    def check(self, authorization: bytes | None) -> Caller | KeyWanted:
        # A comma: two Authorization headers joined (`gather`), never one bearer token.
        if not authorization or len(authorization) > MAX_TOKEN_LENGTH or _COMMA in authorization:
            return ANONYMOUS
        found = self._verified.get(authorization)
        if found is not None:
            expires, caller, signer = found
            if time.time() < expires and (signer is None or self._held(signer.key_id) is signer):
                return caller
            del self._verified.data[authorization]
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return ANONYMOUS
        key: Any = self.key
        if self.keys is not None:
            kid = self._kid(token)
            if kid is None:
                return ANONYMOUS
            key = self.keys.get(kid)
            if key is None:
                return KeyWanted(kid)
        return self._verify(authorization, token, key)

    def _held(self, kid: str) -> Any:
        assert self.keys is not None
        return self.keys.get(kid)

    def _kid(self, token: str) -> str | None:
        """Which of the issuer's keys the token says signed it; unverified, it only picks the key."""
        try:
            kid = self.jwt.get_unverified_header(token).get("kid")
        except (self.jwt.PyJWTError, ValueError, TypeError):
            return None
        return kid if isinstance(kid, str) and kid else None

    def _roles(self, claims: dict[str, Any]) -> frozenset[str]:
        """The roles the token names in `role_claim`: one string, or a list of strings."""
        if self.role_claim is None:
            return frozenset()
        found = claims.get(self.role_claim)
        if isinstance(found, str):
            return frozenset({found})
        if isinstance(found, list):
            return frozenset(role for role in found if isinstance(role, str))
        return frozenset()

    def _verify(self, authorization: bytes, token: str, key: Any) -> Caller:
        try:
            claims = self.jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except (self.jwt.PyJWTError, ValueError, TypeError):  # PyJWTError: bad tokens, and keys that do not fit
            return ANONYMOUS
        user = exact_user_str(str(claims["sub"]))
        if user is None:
            return ANONYMOUS
        age = claims.get(self.age_claim) if self.age_claim else None
        caller = Caller(user, age if isinstance(age, int) and not isinstance(age, bool) else None, self._roles(claims))
        try:
            expires = float(claims["exp"]) + self.leeway
        except OverflowError:  # an integer past any float: the token never expires in practice
            return caller  # verified, but not remembered
        self._verified.put(authorization, (expires, caller, None if self.keys is None else key))
        return caller
