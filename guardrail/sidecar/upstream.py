"""`UpstreamURL`: the upstream `guardrail serve --upstream` names, read once at start: `http://` or
`https://`, a host, an optional port, and an optional path prefix every request's path goes under."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters a path keeps as they are; any other is percent-encoded (`%` too stays: it is taken as
# an escape already made).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


@dataclass(frozen=True, slots=True)
class UpstreamURL:
    scheme: str  # "http" or "https"
    host: str  # as connected to: a name, or an IP address (IPv6 without brackets)
    port: int  # the one given, else the scheme's
    prefix: bytes  # the path, percent-encoded, without a trailing "/": b"" for none
    authority: bytes  # the upstream's own Host header: the host, and the port unless the scheme's

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority.decode('ascii')}{self.prefix.decode('ascii')}"


def parse_upstream(text: str) -> UpstreamURL:
    """The upstream's URL, or ValueError saying what one looks like."""
    invalid = ValueError(
        f"the upstream must be an http:// or https:// URL with a host and no query, such as "
        f"http://127.0.0.1:8080; got {text!r}"
    )
    if any(character.isspace() or not character.isprintable() for character in text):
        raise invalid
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # a port that is not a number from 0 to 65535, an unclosed "["
        raise invalid from None
    host = parts.hostname
    if parts.scheme not in DEFAULT_PORTS or not host or parts.query or parts.fragment:
        raise invalid
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise invalid from None
        named = f"[{host}]"
    else:
        try:
            named = host.encode("idna").decode("ascii")  # (an international name, as DNS knows it)
        except UnicodeError:
            raise invalid from None
        host = named
    default = DEFAULT_PORTS[parts.scheme]
    if port is not None and port != default:
        named += f":{port}"
    prefix = quote(parts.path, safe=_PATH_SAFE).encode("ascii").rstrip(b"/")
    return UpstreamURL(parts.scheme, host, port or default, prefix, named.encode("ascii"))
