"""The headers the sidecar's reverse proxy passes on, both ways (RFC 9110 §7.6.1).

Hop-by-hop headers (`Connection` and those it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`,
`Upgrade`, `Proxy-*`) are dropped both ways. The upstream is asked for its own host; it learns the
client's in `X-Forwarded-Host`, `-Proto` and `-For` (appended to a trusted proxy's; the middleware in
front has dropped anyone else's, `guardrail.mediation`). `Date` and `Server` come from this server, as
with nginx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Scope

from guardrail.identity import ipv4_mapped
from guardrail.sidecar.http1 import Headers

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)  # and every `proxy-*` header
# Not passed on to the upstream: it gets its own Host (the client's goes in X-Forwarded-Host), and
# uvicorn has answered `Expect: 100-continue` already.
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"expect"}
# Not passed back: this server writes its own Date, and Server would name the upstream's software.
_NOT_RETURNED = HOP_BY_HOP | {b"date", b"server"}
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")


def request_headers(scope: Scope, upstream_host: bytes, trusts_forwarded: Callable[[Scope], bool]) -> Headers:
    """The request's headers as they go to the upstream: `upstream_host` as its Host, hop-by-hop
    headers dropped, `X-Forwarded-*` set (`trusts_forwarded(scope)`: whether this peer's own
    `X-Forwarded-Proto` and `-Host` are kept)."""
    named = _connection_names(scope["headers"])
    headers: list[tuple[bytes, bytes]] = [(b"host", upstream_host)]
    forwarded_for: list[bytes] = []
    incoming: dict[bytes, bytes] = {}
    host = b""
    for name, value in scope["headers"]:
        if name in _NOT_FORWARDED or name in named or name.startswith(b"proxy-"):
            if name == b"host":
                host = value
        elif name == b"x-forwarded-for":
            forwarded_for.append(value)
        elif name in _FORWARDED:
            incoming[name] = value
        else:
            headers.append((name, value))
    client = scope.get("client")
    if client:
        forwarded_for.append(_peer_address(client[0]))
    if forwarded_for:
        headers.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    # A trusted proxy in front (a TLS terminator, say) knows better how the client came in.
    trusted = bool(incoming) and trusts_forwarded(scope)
    proto = incoming.get(b"x-forwarded-proto") if trusted else None
    headers.append((b"x-forwarded-proto", proto or scope.get("scheme", "http").encode("latin-1")))
    forwarded_host = (incoming.get(b"x-forwarded-host") if trusted else None) or host
    if forwarded_host:
        headers.append((b"x-forwarded-host", forwarded_host))
    return headers


def _peer_address(host: str) -> bytes:
    """The peer as X-Forwarded-For names it: an IPv4 peer of a dual-stack socket (::ffff:a.b.c.d) as a.b.c.d."""
    return (ipv4_mapped(host) or host).encode("latin-1")


def _connection_names(headers: Any) -> frozenset[bytes]:
    """The headers a `Connection` header names: hop-by-hop too (RFC 9110 §7.6.1)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names)


def response_headers(raw: Headers) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as they go to the client: hop-by-hop, `Date` and `Server` dropped."""
    named = _connection_names(raw)
    out = []
    for name, value in raw:
        lowered = name.lower()
        if lowered not in _NOT_RETURNED and lowered not in named and not lowered.startswith(b"proxy-"):
            out.append((lowered, value))
    return out
