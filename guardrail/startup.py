"""Starting up, and a middleware that cannot start (docs/integrate.md, "Mount it in one call").

The middleware connects the store on `lifespan.startup` and closes it after the app's shutdown, beside the
app's own handlers. A middleware Starlette builds lazily (`app.add_middleware(GuardrailMiddleware, ...)`)
whose policy or store is refused keeps the error instead of raising inside Starlette, and says it: the lifespan
startup fails with every problem, or, on a server without a lifespan, every request gets a 503.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from types import FrameType
from typing import Concatenate, ParamSpec, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardrail.errors import GuardrailError
from guardrail.runtime import Runtime
from guardrail.web.problem import problem

logger = logging.getLogger("guardrail")

_P = ParamSpec("_P")
_M = TypeVar("_M")
# What the app sends at the end of its lifespan: after it, the store is closed. A failed startup ends it too.
_LIFESPAN_ENDS = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed"})


def kept_when_starlette_builds(
    init: Callable[Concatenate[_M, _P], None],
) -> Callable[Concatenate[_M, _P], None]:
    """An error in `__init__` raises at the call, except when Starlette builds its middleware stack
    (`app.add_middleware(GuardrailMiddleware, ...)` is built on the app's first call, its lifespan or
    first request). Raised there, a server sees a broken app: uvicorn says "ASGI 'lifespan' protocol
    appears unsupported" and answers 500 to every request. Kept instead, the middleware fails the
    lifespan startup with the error's text, or, without a lifespan, answers 503 saying why."""

    def init_or_keep_failure(self: _M, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            init(self, *args, **kwargs)
        except Exception as exc:
            if not _built_by_starlette(sys._getframe(1)):
                raise
            self.failure = exc  # type: ignore[attr-defined]

    functools.update_wrapper(init_or_keep_failure, init)  # its signature stays the one help() shows
    return init_or_keep_failure


def _built_by_starlette(frame: FrameType | None) -> bool:
    """Whether `frame` is a Starlette (or FastAPI) app building its middleware stack."""
    if frame is None or frame.f_code.co_name != "build_middleware_stack":
        return False
    from starlette.applications import Starlette

    return isinstance(frame.f_locals.get("self"), Starlette)


def failure_text(error: Exception) -> str:
    said = str(error) if isinstance(error, GuardrailError) else f"{type(error).__name__}: {error}"
    return f"guardrail cannot start: {said}"


async def serve_lifespan(
    app: ASGIApp, runtime: Runtime | None, failure: Exception | None, scope: Scope, receive: Receive, send: Send
) -> None:
    """The app's lifespan, with the store connected before its startup and closed after its shutdown.

    The app's own handlers (FastAPI's `lifespan=`, Starlette's) run as they would without the guardrail.
    An app that does not speak the lifespan protocol fails it as before, and the store is then connected
    by the first request that needs it."""
    if failure is not None or runtime is None:
        await receive()  # lifespan.startup
        text = failure_text(failure) if failure is not None else "guardrail cannot start"
        await send({"type": "lifespan.startup.failed", "message": text})
        return

    async def receive_after_starting() -> Message:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await runtime.start()
        return message

    async def send_after_closing(message: Message) -> None:
        if message["type"] in _LIFESPAN_ENDS:
            await runtime.close()
        await send(message)

    await app(scope, receive_after_starting, send_after_closing)


async def answer_unavailable(failure: Exception, scope: Scope, receive: Receive, send: Send, *, log: bool) -> None:
    """Every request, when the middleware could not start and the server has no lifespan to say so."""
    text = failure_text(failure)
    if log:
        logger.error("%s", text, exc_info=None if isinstance(failure, GuardrailError) else failure)
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1011})
        return
    # The first line names the problem; every problem is in the log, not told to whoever asks.
    detail = text.splitlines()[0]
    await problem(503, "Service Unavailable", f"{detail} (the server log says more)")(scope, receive, send)
