"""The GPC support statement at `/.well-known/gpc.json` (W3C GPC): this service honours `Sec-GPC`.

Served by the management router whenever the API is (a policy's `prefix: null` turns both off), to
every method, like any static resource the guardrail answers itself.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response
from starlette.routing import Route

from guardrail.routes import GPC_PATH

# `lastUpdate`: when the guardrail's GPC handling last changed.
GPC_STATEMENT = Response(
    orjson.dumps({"gpc": True, "lastUpdate": "2026-11-26"}),
    media_type="application/json",
    headers={"Cache-Control": "public, max-age=86400"},
)


def gpc_route() -> Route:
    # A Response is an ASGI app: Starlette's Route passes it every method (no `methods` given).
    return Route(GPC_PATH, GPC_STATEMENT)
