"""Exceptions of the sidecar's exchange with its upstream (`guardrail.sidecar.http1`), one tree so that
callers handle one set. `ReverseProxy` answers a `UpstreamTimeout` with 504, a `TLSError` with 502 (kind
`tls`), any other `ConnectError` with 502 (kind `connect`), and any other `UpstreamError` with 502 (kind
`protocol`).

GuardrailError (guardrail.errors)
 └── UpstreamError            the exchange with the upstream failed
      ├── UpstreamTimeout     something did not happen in time
      │    ├── ConnectTimeout   no connection in time
      │    ├── PoolTimeout      every connection of the pool stayed busy
      │    ├── WriteTimeout     the upstream did not take the request in time
      │    └── ReadTimeout      no answer, or no next piece of it, in time
      ├── ConnectError        no connection: refused, unreachable
      │    └── TLSError         the TLS handshake failed: a certificate refused, by either side
      ├── WriteError          the connection closed before or while the request went out
      ├── ReadError           the connection broke while the answer was read
      ├── RemoteProtocolError the answer is not HTTP/1.1, or the upstream closed the connection before its end
      └── LocalProtocolError  the request cannot be written: a header or the target holds a line break
"""

from __future__ import annotations

from guardrail.errors import GuardrailError


class UpstreamError(GuardrailError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class ConnectTimeout(UpstreamTimeout):
    pass


class PoolTimeout(UpstreamTimeout):
    pass


class WriteTimeout(UpstreamTimeout):
    pass


class ReadTimeout(UpstreamTimeout):
    pass


class ConnectError(UpstreamError):
    pass


class TLSError(ConnectError):
    pass


class WriteError(UpstreamError):
    pass


class ReadError(UpstreamError):
    pass


class RemoteProtocolError(UpstreamError):
    pass


class LocalProtocolError(UpstreamError):
    pass
