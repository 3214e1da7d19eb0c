"""`guardrail serve` (docs/architecture.md §9): the guardrail as a sidecar proxy in front of a service in any language.

One process, or `--workers N` processes under uvicorn's supervisor, each serving a `Sidecar`:
`/metrics`, and everything else through `GuardrailMiddleware` to a `ReverseProxy` of the upstream.

- `app`: the `Sidecar` ASGI app, `build_sidecar(...)` and the workers' factory `create_app()`.
- `proxy`: `ReverseProxy`, forwarding to the upstream over `http1.ConnectionPool`, its HTTP/1.1 client.
- `supervisor`: uvicorn's worker supervisor with SIGHUP passed on, and the sockets it hands the workers.
- `command`: `serve(...)`, what the CLI runs.
- `tls`: `UpstreamTLS`, how an `https://` upstream is reached (its CA file, a client certificate).
- `errors`: the exceptions of the exchange with the upstream.
"""

from guardrail.sidecar.app import METRICS_PATH, Sidecar, build_sidecar, create_app
from guardrail.sidecar.command import serve, share_csrf_key
from guardrail.sidecar.proxy import ReverseProxy
from guardrail.sidecar.supervisor import Supervisor, listening_socket, metrics_socket
from guardrail.sidecar.tls import UpstreamTLS

__all__ = [
    "METRICS_PATH",
    "ReverseProxy",
    "Sidecar",
    "Supervisor",
    "UpstreamTLS",
    "build_sidecar",
    "create_app",
    "listening_socket",
    "metrics_socket",
    "serve",
    "share_csrf_key",
]
