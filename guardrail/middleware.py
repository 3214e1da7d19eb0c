"""`GuardrailMiddleware`: the pure-ASGI guardrail in front of a recommendation app."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from itertools import islice
from types import FrameType
from typing import Concatenate, NamedTuple, ParamSpec

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardrail._version import __version__
from guardrail.callers import Caller
from guardrail.candidate import Candidate, candidate_policy, check_rate, sample_for
from guardrail.engine import RequestSignals, UserContext
from guardrail.errors import GuardrailError, StoreError
from guardrail.guard import Guard
from guardrail.identity import Identify
from guardrail.mediation import FORWARDING, FORWARDING_PREFIX, GUARDRAIL_CONTEXT
from guardrail.metrics import Metrics, metrics_for
from guardrail.paths import PathError
from guardrail.policy.loading import load_policy
from guardrail.policy.models import Policy
from guardrail.recording import CaseRecorder
from guardrail.representation import upstream_scope
from guardrail.responder import GuardedResponder
from guardrail.routes import GuardedRoute
from guardrail.runtime import ReadinessCheck, Runtime
from guardrail.sampling import Asked
from guardrail.settings import Settings
from guardrail.speedups import ACCELERATED
from guardrail.state import DEFAULT_STATE, UserState
from guardrail.store import Store
from guardrail.web.problem import problem
from guardrail.web.router import build_management_app

logger = logging.getLogger("guardrail")

_P = ParamSpec("_P")
# What the app sends at the end of its lifespan: after it, the store is closed. A failed startup ends it too.
_LIFESPAN_ENDS = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed"})


class Served(NamedTuple):
    """What one policy serves: the guard, and the management app built for it. Swapped as one."""

    guard: Guard
    management: ASGIApp


class Resolved(NamedTuple):
    """A request resolved: the guard it is decided on, who asks, their context and its `Guardrail-Context`,
    and what the context was made of (for a candidate policy, or a recorded case)."""

    guard: Guard
    caller: Caller
    ctx: UserContext
    header: bytes
    asked: Asked


# The scope key under which the middleware hands its `Resolved` to the app on a guarded route.
RESOLVED = "guardrail.resolved"


def _kept_when_starlette_builds(
    init: Callable[Concatenate[GuardrailMiddleware, _P], None],
) -> Callable[Concatenate[GuardrailMiddleware, _P], None]:
    """An error in `__init__` raises at the call, except when Starlette builds its middleware stack
    (`app.add_middleware(GuardrailMiddleware, ...)` is built on the app's first call, its lifespan or
    first request). Raised there, a server sees a broken app: uvicorn says "ASGI 'lifespan' protocol
    appears unsupported" and answers 500 to every request. Kept instead, the middleware fails the
    lifespan startup with the error's text, or, without a lifespan, answers 503 saying why."""

    def init_or_keep_failure(self: GuardrailMiddleware, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            init(self, *args, **kwargs)
        except Exception as exc:
            if not _built_by_starlette(sys._getframe(1)):
                raise
            self.failure = exc

    functools.update_wrapper(init_or_keep_failure, init)  # its signature stays the one help() shows
    return init_or_keep_failure


def _built_by_starlette(frame: FrameType | None) -> bool:
    """Whether `frame` is a Starlette (or FastAPI) app building its middleware stack."""
    if frame is None or frame.f_code.co_name != "build_middleware_stack":
        return False
    from starlette.applications import Starlette

    return isinstance(frame.f_locals.get("self"), Starlette)


def _failure_text(error: Exception) -> str:
    said = str(error) if isinstance(error, GuardrailError) else f"{type(error).__name__}: {error}"
    return f"guardrail cannot start: {said}"


class GuardrailMiddleware:
    """Check every item a guarded route returns against consent, invasiveness and the user's controls.

    `policy` is a loaded `Policy` or the path of a policy file; `store` a store URL (`memory://`,
    `redis://...`) or a store object, by default `GUARDRAIL_STORE` or `memory://`; `registry` the
    Prometheus registry for the metrics (the global one by default); `identify` the function that
    says who is asking when the policy's `identity.source` is `callable` (docs/integrate.md, "Identity:
    where the middleware sits"), kept across reloads.

    A store made from a URL here counts into this middleware's metrics. A store object keeps the
    metrics it was made with: `create_store(url, metrics=metrics_for(registry))` counts on the same
    registry, and without `metrics` its cache lookups and errors are not counted.

    With a lifespan, the store is connected at startup and, after the app's own shutdown, its queued
    decision records are written and it is closed (`Runtime.start`, `Runtime.close`). A bad policy or
    store raises at the call; built by `app.add_middleware`, it fails the startup instead (see
    `_kept_when_starlette_builds`).
    """

    # Why it cannot serve, when Starlette built it and the policy or the store was refused.
    failure: Exception | None = None
    _failure_logged = False

    @_kept_when_starlette_builds
    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: Policy | str | os.PathLike[str],
        store: Store | str | None = None,
        registry: CollectorRegistry | None = None,
        identify: Identify | None = None,
        candidate: Policy | str | os.PathLike[str] | None = None,
        candidate_rate: float = 0.1,
        record_cases: str | os.PathLike[str] | None = None,
        record_rate: float = 0.01,
    ) -> None:
        self.app = app
        self._identify = identify
        if store is None:
            store = Settings().store  # GUARDRAIL_STORE, else memory://
        if not isinstance(policy, Policy):
            policy = load_policy(policy)
        # A candidate that does not load is refused here, as the live policy is: every problem listed.
        self._candidate_rate = check_rate("candidate_rate", candidate_rate)
        candidate = candidate_policy(candidate) if candidate is not None else None
        recorder = CaseRecorder(record_cases, record_rate) if record_cases is not None else None
        self.runtime = Runtime(
            store,
            metrics_for(registry),
            accelerated=ACCELERATED,
            decisions_per_user=policy.decisions_per_user,
            retention=timedelta(days=policy.decision_retention_days),
            timeout=policy.store_timeout_ms / 1000,
        )
        self._served = self._serve(policy)
        self._candidate: Candidate | None = None
        self._recorder = recorder
        if candidate is not None or recorder is not None:
            self.use_candidate(candidate)
        # Which loop runs is said once at start; the slower one as a warning, so that it is seen.
        logger.log(
            logging.INFO if ACCELERATED else logging.WARNING,
            "guardrail %s started; the per-item loop runs in %s",
            __version__,
            "C" if ACCELERATED else "Python, about twice as slow (the C extension is not built: see docs/install.md)",
            extra={"version": __version__, "accelerated": ACCELERATED},
        )

    # -- policy -------------------------------------------------------------------------------

    def _serve(self, policy: Policy) -> Served:
        runtime = self.runtime
        guard = Guard(policy, count_tc_string=runtime.count_tc_string, identify=self._identify)
        served = Served(guard, build_management_app(runtime, guard))
        runtime.metrics.set_policy(policy.policy_id)
        return served

    def use_policy(self, policy: Policy) -> None:
        """Swap in a new policy atomically: running requests finish on the one they started with."""
        self._served = self._serve(policy)

    def use_candidate(self, policy: Policy | None) -> None:
        """Evaluate `policy` beside the live one on a sample of guarded requests (`candidate_rate`),
        or stop with None. A reload of the live policy keeps the candidate."""
        if policy is None:
            self._candidate = None
        elif self._candidate is None:
            self._candidate = Candidate(policy, self._candidate_rate, self.runtime.metrics)
        else:
            self._candidate.use(policy)
        sample_for(self.runtime, self._candidate, self._recorder)

    @property
    def candidate(self) -> Policy | None:
        """The candidate policy evaluated beside the live one, if any."""
        return self._candidate.policy if self._candidate is not None else None

    @property
    def guard(self) -> Guard:
        return self._served.guard

    @property
    def policy(self) -> Policy:
        return self._served.guard.policy

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """Make `/readyz` also depend on `check` (an async callable: None when ready, else a short
        reason, shown to anyone who asks, so nothing internal), reported under `name`."""
        self.runtime.add_readiness_check(name, check)

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if self.failure is not None:
            await self._unavailable(scope, receive, send)
            return
        started = time.perf_counter()
        served = self._served  # read once: a reload swaps it, this request keeps the pair it started with
        guard = served.guard
        # Whatever the route: what an untrusted peer claims, `_` names and a forged context go no further.
        scope, headers = guard.screen(scope)
        if kind != "http":
            await self.app(scope, receive, send)
            return
        try:
            target, forward = guard.routes.find(scope["path"], scope.get("raw_path"), scope["method"])
        except PathError as exc:
            await problem(400, "Bad Request", str(exc))(scope, receive, send)
            return
        if forward is not None:
            # The app serves the path that was matched, however it reads the spelling that came.
            scope = {**scope, "path": forward[0], "raw_path": forward[1]}
        if isinstance(target, GuardedRoute):
            await self._guarded(guard, target, scope, headers, started, receive, send)
        elif target is None:
            await self.app(scope, receive, send)
        else:  # the API, the page, the GPC statement: the guardrail's own
            await served.management(scope, receive, send)

    async def _guarded(
        self,
        guard: Guard,
        route: GuardedRoute,
        scope: Scope,
        headers: dict[bytes, bytes],
        started: float,
        receive: Receive,
        send: Send,
    ) -> None:
        resolved = await self.resolve(scope, guard=guard, headers=headers)
        caller, ctx = resolved.caller, resolved.ctx
        # What was decided, told to the app before it runs (docs/architecture.md §7).
        context = (GUARDRAIL_CONTEXT, resolved.header)
        # The upstream is asked only for what can be checked: whole JSON, in a coding the guardrail reads.
        scope = upstream_scope(scope, headers, extra=context)
        rewritten = route.non_personalized is not None and not ctx.personalized_allowed
        if rewritten:
            scope = self._non_personalized(scope, route, guard)
        else:
            # An app that checks its items in process (`guardrail.inprocess`) decides for this caller
            # without resolving them again. Not on the non-personalized route: it gets nobody's identity.
            scope[RESOLVED] = resolved
        runtime = self.runtime
        responder = GuardedResponder(
            runtime,
            guard,
            route,
            ctx,
            caller,
            send,
            rewritten=rewritten,
            head=scope["method"] == "HEAD",
            asked=resolved.asked,
        )
        before = time.perf_counter() - started
        await self.app(scope, receive, responder)
        runtime.request_done(
            route.template,
            responder.outcome,
            hidden=responder.hidden_count,
            decision=responder.decision_id,
            user=caller.user,
            started=started,
            overhead=before + responder.overhead,
        )

    async def resolve(
        self, scope: Scope, *, guard: Guard | None = None, headers: dict[bytes, bytes] | None = None
    ) -> Resolved:
        """Who asks, and what may be used for them: identity, age, GPC, TCF and the stored controls
        (with the fail modes when the store is down), made into the user's context and its
        `Guardrail-Context`. The one way a request is resolved, for the middleware and for in-process
        checks. `guard` and `headers` are what `__call__` already has; without them the live guard
        screens `scope` here (a scope the middleware has not seen: what an untrusted peer claims counts
        for nothing)."""
        if guard is None:
            guard = self._served.guard
        if headers is None:
            _, headers = guard.screen(scope)
        # GPC is exactly "1" after trimming; with repeated headers (joined with commas by the screen,
        # as they may also arrive, RFC 9110 §5.3) one "1" is enough.
        sec_gpc = headers.get(b"sec-gpc")
        gpc = sec_gpc is not None and any(part.strip(b" \t") == b"1" for part in sec_gpc.split(b","))
        caller = await guard.identity.resolve(scope, headers)
        age = caller.age
        minor = age is not None and age < guard.policy.minors.age_of_majority
        tcf = guard.tcf
        tc_string = tcf.find(headers, scope["query_string"]) if tcf.mapping else None
        request = RequestSignals(gpc, minor, tcf.verdict(tc_string) if tc_string is not None else None)
        accept_language = headers.get(b"accept-language")

        state: UserState | None = None
        unavailable = degraded = False
        if caller.user is not None:
            state, unavailable, degraded = await self._state_of(caller.user, guard.policy)
        ctx, header = guard.context(
            caller.user,
            state,
            request,
            accept_language,
            store_unavailable=unavailable,
            degraded=degraded,
        )
        return Resolved(guard, caller, ctx, header, Asked(state, gpc, age, tc_string, accept_language, degraded))

    # -- lifespan, and a middleware that cannot start -------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's lifespan, with the store connected before its startup and closed after its shutdown.

        The app's own handlers (FastAPI's `lifespan=`, Starlette's) run as they would without the
        guardrail. An app that does not speak the lifespan protocol fails it as before, and the store
        is then connected by the first request that needs it."""
        if self.failure is not None:
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.failed", "message": _failure_text(self.failure)})
            return
        runtime = self.runtime

        async def receive_after_starting() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await runtime.start()
            return message

        async def send_after_closing(message: Message) -> None:
            if message["type"] in _LIFESPAN_ENDS:
                await runtime.close()
            await send(message)

        await self.app(scope, receive_after_starting, send_after_closing)

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request, when the middleware could not start and the server has no lifespan to say so."""
        assert self.failure is not None
        text = _failure_text(self.failure)
        if not self._failure_logged:
            self._failure_logged = True
            logger.error("%s", text, exc_info=None if isinstance(self.failure, GuardrailError) else self.failure)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1011})
            return
        # The first line names the problem; every problem is in the log, not told to whoever asks.
        detail = text.splitlines()[0]
        await problem(503, "Service Unavailable", f"{detail} (the server log says more)")(scope, receive, send)

    async def _state_of(self, user: str, policy: Policy) -> tuple[UserState, bool, bool]:
        """(state, store unavailable, degraded). Closed: as if no consent; open: purpose defaults.

        Either way the last state seen, if any, still restricts: a topic the user muted stays
        hidden while the store is down (closed mode trusts none of its consents)."""
        store = self.runtime.store
        try:
            state = await store.load(user)
        except StoreError:
            known = store.last_known(user)
            if policy.fail_mode == "closed":
                return (known if known is not None else DEFAULT_STATE), True, True
            # Open: sensitive opt-ins are not trusted while degraded (the engine hides those items),
            # and minor rules do not need the store.
            return (known if known is not None else DEFAULT_STATE), False, True
        return (state if state is not None else DEFAULT_STATE), False, False

    @staticmethod
    def _non_personalized(scope: Scope, route: GuardedRoute, guard: Guard) -> Scope:
        """Ask the upstream for the non-personalized route, with nothing that identifies the user:
        profiling is then impossible by construction, not merely filtered afterwards (DSA Art. 38).
        The last header of `scope` is the `Guardrail-Context` (see `upstream_scope`): it stays."""
        assert route.non_personalized is not None
        strip = {name.encode("latin-1") for name in route.non_personalized.strip_headers}
        # Forwarding headers, even a trusted proxy's, name the client (X-Forwarded-For, True-Client-IP)
        # or would steer the app back to the personalized route (X-Original-URL).
        strip |= guard.identity.identifying_headers | FORWARDING
        target = route.non_personalized.rewrite_to
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
