"""What the app behind the guardrail may be told (docs/architecture.md §7, complete mediation of request headers).

`HeaderScreen` makes one pass over a request's headers, first thing in the middleware, for every HTTP
request and websocket, whatever its route; the wrapped app (in sidecar mode, the reverse proxy and so the
upstream) sees only what is left:
- a header name with `_` is dropped: servers that map `_` to `-` (CGI and WSGI environ, some proxies)
  would read `transfer_encoding` or `x_user_id` as the real thing, past every check on the `-` spelling;
- the identity and age headers, and forwarding headers (`Forwarded`, `X-Forwarded-*`, `X-Real-IP` and
  their kin, and the path and method overrides of `X-Original-URL` and the like), are dropped unless the
  peer is one of `identity.trusted_proxies`: only a trusted proxy may say who the client is, where it
  came from, or what it asked for. The sidecar then says itself what it saw (`guardrail.sidecar.proxy`);
- a client's `Guardrail-Context` is dropped: that header is the guardrail's word, set on guarded routes;
- an identity header sent more than once, or an identity or age header with a comma (two claims folded
  into one), is dropped, every copy: the guardrail takes the caller as anonymous, and the app must not
  pick one of the claims instead.

The same pass gathers the headers the guardrail reads (`Guard.wanted`; identity headers joined as
`identity.gather` joins them), so that a guarded request costs one pass over its headers.
"""

from __future__ import annotations

from itertools import islice

from starlette.types import Scope

from guardrail.identity import IdentityResolver
from guardrail.policy.models import NonPersonalized

GUARDRAIL_CONTEXT = b"guardrail-context"
# Where a request came from and what it asked for, in the words of whoever forwarded it.
FORWARDING = frozenset(
    {
        b"forwarded",
        b"x-real-ip",
        b"x-client-ip",
        b"client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-cluster-client-ip",
        b"x-proxyuser-ip",
        b"x-envoy-external-address",
        b"x-original-forwarded-for",
        b"x-original-host",
        b"x-host",
        b"x-original-url",
        b"x-original-uri",
        b"x-rewrite-url",
        b"x-envoy-original-path",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
    }
)
# X-Forwarded-For, -Host, -Proto, -Port, -Prefix, -Server, -Ssl, ... and X-Forwarded itself.
FORWARDING_PREFIX = b"x-forwarded"
# Read by the guardrail with every repeat joined with ", " (RFC 9110 §5.3): any `Sec-GPC: 1` counts.
_JOINED = frozenset({b"sec-gpc"})
# `95 in name` is several times faster than `b"_" in name`, and this runs for every header.
_UNDERSCORE = ord("_")
_COMMA = ord(",")


class HeaderScreen:
    """`scope, headers = screen(scope)`: the scope the app may see, and the headers the guardrail reads."""

    __slots__ = (
        "_claims_read",
        "_from_anyone",
        "_from_trusted_only",
        "_identity",
        "_identity_headers",
        "_joined",
        "_noted_from_anyone",
        "_noted_from_untrusted",
    )

    def __init__(self, identity: IdentityResolver, wanted: frozenset[bytes]) -> None:
        self._identity = identity
        self._identity_headers = identity.wanted
        # An id or an age never has a comma (an Authorization header may: `Digest a=1, b=2`).
        self._claims_read = identity.wanted & identity.claims
        self._joined = identity.wanted | _JOINED
        self._from_anyone = frozenset({GUARDRAIL_CONTEXT})
        self._from_trusted_only = self._from_anyone | FORWARDING | identity.claims
        # Every name read or dropped: one set lookup passes most headers on.
        self._noted_from_anyone = wanted | self._from_anyone
        self._noted_from_untrusted = wanted | self._from_trusted_only

    def __call__(self, scope: Scope) -> tuple[Scope, dict[bytes, bytes]]:
        trusted = self._identity.is_trusted(scope)
        dropped, noted = (
            (self._from_anyone, self._noted_from_anyone)
            if trusted
            else (self._from_trusted_only, self._noted_from_untrusted)
        )
        found: dict[bytes, bytes] = {}
        clean = True
        ambiguous = False  # an identity claimed twice: the guardrail sees nobody, and so shall the app
        for name, value in scope["headers"]:
            if _UNDERSCORE in name or (not trusted and name.startswith(FORWARDING_PREFIX)):
                clean = False
            elif name not in noted:
                continue
            elif name in dropped:
                clean = False
            else:
                previous = found.get(name)
                if previous is None:
                    found[name] = value
                elif name in self._joined:
                    found[name] = previous + b", " + value
                    ambiguous = ambiguous or name in self._identity_headers
        for name in self._claims_read:
            value = found.get(name)
            if value is not None and _COMMA in value:
                ambiguous = True
        if ambiguous:
            dropped = dropped | self._identity_headers
        if clean and not ambiguous:
            return scope, found
        # Something to drop, which most requests do not have: a second pass, on this rare path only.
        kept = [
            (name, value)
            for name, value in scope["headers"]
            if not (name in dropped or _UNDERSCORE in name or (not trusted and name.startswith(FORWARDING_PREFIX)))
        ]
        return {**scope, "headers": kept}, found


def non_personalized_scope(scope: Scope, route: NonPersonalized, identifying: frozenset[bytes]) -> Scope:
    """Ask the upstream for the non-personalized route, with nothing that identifies the user:
    profiling is then impossible by construction, not merely filtered afterwards (DSA Art. 38).
    `identifying`: the identity source's headers. The last header of `scope` is the `Guardrail-Context`
    (see `guardrail.representation.upstream_scope`): it stays."""
    strip = {name.encode("latin-1") for name in route.strip_headers}
    # Forwarding headers, even a trusted proxy's, name the client (X-Forwarded-For, True-Client-IP)
    # or would steer the app back to the personalized route (X-Original-URL).
    strip |= identifying | FORWARDING
    target = route.rewrite_to
    sent = scope["headers"]
    kept = islice(sent, len(sent) - 1)
    headers = [header for header in kept if header[0] not in strip and not header[0].startswith(FORWARDING_PREFIX)]
    headers.append(sent[-1])
    return {
        **scope,
        "path": target,
        "raw_path": target.encode(),
        "headers": headers,
        # The client's address identifies them too: the app (or the sidecar's proxy, which would
        # put it in X-Forwarded-For) does not get it.
        "client": None,
    }
