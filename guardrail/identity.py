"""Who is asking: identity only from the policy's trusted source (docs/architecture.md §7).

- `header`: `identity.header` (and `identity.age_header`) count only when the TCP peer is one of
  `identity.trusted_proxies` (an IPv4-mapped IPv6 peer is its IPv4 address); from anyone else the
  caller is anonymous, whatever the header says. A header sent twice, or with a comma in it (repeats
  joined, RFC 9110 §5.3), is two claims: anonymous.
- `jwt`: a bearer token, verified with the key in the environment variable `jwt.key_env`, with the
  algorithms the policy names (never the one the token names), `exp` required, and the audience
  and issuer checked when the policy gives them. Anything wrong: anonymous.
  With `jwt.jwks_url` the keys are the issuer's published key set, chosen by the token's `kid` and
  refetched as the issuer rotates them (guardrail/jwks.py). `jwt.leeway_seconds` applies to exp, nbf, iat.
- `scope`: `scope["user"]` as Starlette's `AuthenticationMiddleware` leaves it (`identity`, else
  `display_name`). Any other object there, or one whose attributes raise, is anonymous, never an error.
- `callable`: `identify(scope)`, the function given to the middleware, returns `(user id, age or None)`
  or None. It is called on the event loop, so it is a plain function that reads what an authentication
  middleware in front left in the scope; an async one is refused at start. What it returns is checked
  as any id is; an exception in it makes the caller anonymous and is logged once per kind, without ids.

An id is taken exactly as sent: one with a control, format or space character other than an inner " "
is refused, never trimmed or normalized into someone else's (`alice\xa0` is not `alice`).
`IdentityResolver.resolve` decides for every surface: guarded routes, the API and the page.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from guardrail.caching import BoundedCache
from guardrail.callers import ANONYMOUS, MAX_USER_ID_LENGTH, Caller, exact_user_id, exact_user_str
from guardrail.errors import GuardrailError
from guardrail.jwks import KeySet
from guardrail.policy.models import Identity as IdentitySettings
from guardrail.policy.models import JwtSettings
from guardrail.tokens import TokenVerifier

logger = logging.getLogger("guardrail")

_AUTHORIZATION = b"authorization"
_COMMA = ord(",")  # `44 in value` is several times faster than `b"," in value`

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Peer addresses whose trust is kept, and verified tokens (until they expire): both come from clients.
PEERS_REMEMBERED = 10_000


# Kinds of trouble with a host's identity (an exception type, an odd return) said in the log: once each.
KINDS_LOGGED = 100


# `identity.source: callable`: who is asking, from the ASGI scope: (user id, age or None), or None.
Identify = Callable[[MutableMapping[str, Any]], "tuple[str, int | None] | None"]


class IdentityResolver:
    def __init__(
        self, settings: IdentitySettings, identify: Identify | None = None, *, role_claim: str | None = None
    ) -> None:
        self.source = settings.source
        self._identify = _checked_identify(settings.source, identify)
        self._logged: set[str] = set()
        self.header = settings.header.encode("latin-1")
        self.age_header = settings.age_header.encode("latin-1") if settings.age_header else None
        self._networks = _trusted_networks(settings.trusted_proxies)
        self._trusted_hosts: BoundedCache[str, bool] = BoundedCache(PEERS_REMEMBERED)
        self.tokens = TokenVerifier(settings.jwt or JwtSettings(), role_claim) if settings.source == "jwt" else None
        # Where a client says who it is: only a trusted proxy may send these (the JWT source verifies
        # its token instead, but an upstream may still read the header).
        self.claims = frozenset(h for h in (self.header, self.age_header) if h is not None)
        # The header names this resolver reads from a request, in the same pass as the others.
        self.wanted = frozenset({_AUTHORIZATION}) if self.tokens is not None else self.claims

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
                mapped = ipv4_mapped(host)
                forms = (address,) if mapped is None else (address, ipaddress.IPv4Address(mapped))
                trusted = any(form in network for network in self._networks for form in forms)
            self._trusted_hosts.put(host, trusted)
        return trusted

    @property
    def keys(self) -> KeySet | None:
        """The issuer's key set, when the policy names a JWKS URL."""
        return self.tokens.keys if self.tokens is not None else None

    async def caller(self, scope: Any) -> Caller:
        """Who is asking, read from the request's own headers (the API and the page)."""
        return await self.resolve(scope, gather(scope["headers"], self.wanted))

    async def resolve(self, scope: Any, headers: dict[bytes, bytes]) -> Caller:
        """Who is asking. `headers`: the request's headers that `wanted` names, repeats joined with
        ", " (`gather`); a comma in an identity header therefore means two claims, and no identity.
        Only a token whose key is not held yet waits (for one bounded fetch of the key set)."""
        if self.tokens is not None:
            authorization = headers.get(_AUTHORIZATION)
            found = self.tokens.check(authorization)
            return found if isinstance(found, Caller) else await self.tokens.after_fetch(found, authorization)
        if self.source == "scope":
            return self._from_scope_user(scope)
        if self._identify is not None:
            return self._from_identify(scope)
        if self.source != "header" or not self.is_trusted(scope):
            return ANONYMOUS
        raw_age = headers.get(self.age_header) if self.age_header else None
        if raw_age is not None and _COMMA in raw_age:
            return ANONYMOUS
        user = exact_user_id(headers.get(self.header))
        if user is None or "," in user:
            return ANONYMOUS
        return Caller(user, _parse_age(raw_age))

    def _from_scope_user(self, scope: Any) -> Caller:
        # Starlette's AuthenticationMiddleware puts a BaseUser in scope["user"]; other frameworks, other things.
        user = scope.get("user")
        if user is None:
            return ANONYMOUS
        try:
            if not getattr(user, "is_authenticated", False):
                return ANONYMOUS
            try:
                identity = user.identity
            except NotImplementedError:  # Starlette's SimpleUser has a display name, not an identity
                identity = getattr(user, "display_name", "")
            except AttributeError:
                identity = getattr(user, "display_name", None)
                if identity is None:
                    self._log_once(
                        f"no id {type(user).__qualname__}",
                        "scope['user'] (a %s) has neither identity nor display_name, so the caller is anonymous; "
                        "use identity.source: callable to say which of its attributes is the user id",
                        type(user).__qualname__,
                    )
            name = exact_user_str(str(identity or ""))
            age = getattr(user, "age", None)
        except Exception as exc:  # a property of the host's user object that raises
            self._log_once(
                f"scope {type(exc).__qualname__}",
                "reading scope['user'] raised %s, so the caller is anonymous",
                type(exc).__qualname__,
            )
            return ANONYMOUS
        return Caller(name, age if isinstance(age, int) and not isinstance(age, bool) else None)

    def _from_identify(self, scope: Any) -> Caller:
        assert self._identify is not None
        try:
            found: Any = self._identify(scope)
        except Exception as exc:  # the host's function: its failure is its caller's anonymity, never a 500
            self._log_once(
                f"raised {type(exc).__qualname__}",
                "identify raised %s, so the caller is anonymous (said once for each kind of error)",
                type(exc).__qualname__,
            )
            return ANONYMOUS
        if found is None:
            return ANONYMOUS
        if inspect.isawaitable(found):
            if inspect.iscoroutine(found):
                found.close()  # never awaited: no "was never awaited" warning from it
            self._log_once("awaitable", "identify returned an awaitable, so the caller is anonymous; %s", _PLAIN)
            return ANONYMOUS
        if not isinstance(found, tuple) or len(found) != 2:
            self._log_once(
                f"returned {type(found).__qualname__}",
                "identify returned a %s, not (user id, age) or None, so the caller is anonymous",
                type(found).__qualname__,
            )
            return ANONYMOUS
        user, age = found
        if not isinstance(user, str):
            self._log_once(
                f"user {type(user).__qualname__}",
                "identify returned a user id that is a %s, not a str, so the caller is anonymous",
                type(user).__qualname__,
            )
            return ANONYMOUS
        name = exact_user_str(user)
        if name is None:
            self._log_once(
                "unusable id",
                "identify returned a user id that is empty, longer than %d characters, or has a control, format "
                "or edge space character, so the caller is anonymous",
                MAX_USER_ID_LENGTH,
            )
            return ANONYMOUS
        return Caller(name, age if isinstance(age, int) and not isinstance(age, bool) and age >= 0 else None)

    def _log_once(self, kind: str, message: str, *args: object) -> None:
        """A warning the first time this kind of trouble happens: the host has a bug to fix, and a flood
        of requests must not become a flood of log lines. Type names only: never a user id."""
        if kind not in self._logged and len(self._logged) < KINDS_LOGGED:
            self._logged.add(kind)
            logger.warning(message, *args)


_PLAIN = (
    "identify must be a plain function: read what your authentication middleware left in the scope "
    "(scope['user'], scope['state']), see docs/integrate.md"
)


def _checked_identify(source: str, identify: Identify | None) -> Identify | None:
    """`identify` is used exactly when the policy says `source: callable`; any other pairing is refused
    at start, so that which identity counts is never in doubt."""
    if source != "callable":
        if identify is not None:
            raise GuardrailError(
                f"identify was given, but identity.source is {source}, so it would never be called; "
                "set identity.source: callable in the policy to use it, or do not pass identify"
            )
        return None
    if identify is None:
        raise GuardrailError(
            "identity.source is callable, but no identify function was given; pass identify=fn to "
            "GuardrailMiddleware (fn(scope) returns (user id, age or None) or None), or set identity.source "
            "to header, jwt or scope"
        )
    if not callable(identify):
        raise GuardrailError(f"identify must be a function of the scope, not a {type(identify).__qualname__}")
    if inspect.iscoroutinefunction(identify) or inspect.iscoroutinefunction(type(identify).__call__):
        raise GuardrailError(f"identify is async; {_PLAIN}")
    return identify


def gather(raw_headers: Iterable[tuple[bytes, bytes]], wanted: frozenset[bytes]) -> dict[bytes, bytes]:
    """The headers `wanted` names, each repeat joined to the first with ", " (RFC 9110 §5.3), so that
    no surface reads one copy of a repeated identity header while another reads the other."""
    found: dict[bytes, bytes] = {}
    for name, value in raw_headers:
        if name in wanted:
            previous = found.get(name)
            found[name] = value if previous is None else previous + b", " + value
    return found


def _trusted_networks(entries: list[str]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for entry in entries:
        network = ipaddress.ip_network(entry, strict=False)
        networks.append(network)
        # An IPv4-mapped entry (::ffff:10.0.0.0/104) also names the IPv4 peers it maps.
        mapped = ipv4_mapped(str(network.network_address)) if network.version == 6 else None
        if mapped is not None and network.prefixlen >= 96:
            networks.append(ipaddress.IPv4Network((mapped, network.prefixlen - 96)))
    return tuple(networks)


def ipv4_mapped(address: str) -> str | None:
    """The IPv4 address an IPv4-mapped IPv6 address stands for (`::ffff:a.b.c.d` is a.b.c.d), else None.

    A dual-stack socket shows an IPv4 peer so: it is still a.b.c.d, to `trusted_proxies` and in
    X-Forwarded-For. Sockets write it dotted, which needs no parsing; other spellings are parsed."""
    if address.startswith("::ffff:"):
        dotted = address[7:]
        if dotted.count(".") == 3 and ":" not in dotted and "%" not in dotted:
            return dotted
    if ":" not in address or "ffff" not in address.lower():
        return None
    try:
        mapped = ipaddress.IPv6Address(address).ipv4_mapped
    except ValueError:
        return None
    return None if mapped is None else str(mapped)


def _parse_age(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 3:
        return None
    return int(text)
