"""`GuardrailMiddleware`: the pure-ASGI guardrail in front of a recommendation app."""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail._version import __version__
from guardrail.callers import Caller
from guardrail.candidate import Candidate, candidate_policy, check_rate, sample_for
from guardrail.engine import UserContext
from guardrail.errors import StoreError
from guardrail.guard import Guard
from guardrail.identity import Identify
from guardrail.mediation import GUARDRAIL_CONTEXT, non_personalized_scope
from guardrail.metrics import Metrics, metrics_for
from guardrail.paths import PathError
from guardrail.policy.loading import load_policy
from guardrail.policy.models import Policy
from guardrail.recording import CaseRecorder
from guardrail.representation import upstream_scope
from guardrail.responder import GuardedResponder
from guardrail.review import Overlay
from guardrail.routes import ROUTE_TEMPLATE, GuardedRoute
from guardrail.runtime import ReadinessCheck, Runtime
from guardrail.sampling import Asked
from guardrail.settings import Settings
from guardrail.speedups import ACCELERATED
from guardrail.startup import answer_unavailable, kept_when_starlette_builds, serve_lifespan
from guardrail.state import DEFAULT_STATE, UserState
from guardrail.store import Store
from guardrail.tracing import tracing_for
from guardrail.web.problem import problem
from guardrail.web.router import build_management_app

if TYPE_CHECKING:
    from guardrail.tracing import TracerProvider

logger = logging.getLogger("guardrail")


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

    Traces (the `otel` extra, docs/operations.md "Traces"): with OpenTelemetry configured (the OTEL_*
    environment, or a tracer provider the application has set) or `GUARDRAIL_TRACING=otel`, guarded
    requests are spans of the global tracer provider; `tracer_provider` gives another, and turns
    tracing on whatever the environment says.

    With a lifespan, the store is connected at startup and, after the app's own shutdown, its queued
    decision records are written and it is closed (`Runtime.start`, `Runtime.close`). A bad policy or
    store raises at the call; built by `app.add_middleware`, it fails the startup instead (see
    `guardrail.startup.kept_when_starlette_builds`).
    """

    # Why it cannot serve, when Starlette built it and the policy or the store was refused.
    failure: Exception | None = None
    _failure_logged = False

    @kept_when_starlette_builds
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
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.app = app
        self._identify = identify
        if store is None:
            store = Settings.load().store.get_secret_value()  # GUARDRAIL_STORE, else memory://
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
            tracing=tracing_for(tracer_provider),
        )
        self._served = self._serve(policy)
        # A reviewer's decision, on any replica, serves the policy again with it (docs/review.md).
        self.runtime.store.review_queue().on_change(self._use_review)
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
        queue = runtime.store.review_queue()
        if policy.review is not None:
            queue.max_entries = policy.review.max_entries
        guard = Guard(policy, count_tc_string=runtime.count_tc_string, identify=self._identify, overlay=queue.overlay)
        served = Served(guard, build_management_app(runtime, guard))
        runtime.metrics.set_policy(policy.policy_id)
        return served

    def use_policy(self, policy: Policy) -> None:
        """Swap in a new policy atomically: running requests finish on the one they started with."""
        self._served = self._serve(policy)

    def _use_review(self, overlay: Overlay) -> None:
        """Serve the live policy, and decide the candidate, with the reviewers' decisions now in force."""
        self.use_policy(self._served.guard.written)
        if self._candidate is not None:
            self._candidate.use(self._candidate.policy, overlay)

    def use_candidate(self, policy: Policy | None) -> None:
        """Evaluate `policy` beside the live one on a sample of guarded requests (`candidate_rate`),
        or stop with None. A reload of the live policy keeps the candidate."""
        if policy is None:
            self._candidate = None
        elif self._candidate is None:
            overlay = self.runtime.store.review_queue().overlay
            self._candidate = Candidate(policy, self._candidate_rate, self.runtime.metrics, overlay)
        else:
            self._candidate.use(policy, self.runtime.store.review_queue().overlay)
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
            tracing = self.runtime.tracing
            if tracing is None:
                await self._guarded(guard, target, scope, headers, started, receive, send)
            else:
                with tracing.checking(scope, target.template) as span:
                    done = await self._guarded(guard, target, scope, headers, started, receive, send)
                    tracing.decided(span, done.decision_id, done.outcome, done.hidden_count)
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
    ) -> GuardedResponder:
        resolved = await self.resolve(scope, guard=guard, headers=headers)
        caller, ctx = resolved.caller, resolved.ctx
        # What was decided, told to the app before it runs (docs/architecture.md §7).
        context = (GUARDRAIL_CONTEXT, resolved.header)
        # The upstream is asked only for what can be checked: whole JSON, in a coding the guardrail reads.
        scope = upstream_scope(scope, headers, extra=context)
        rewritten = route.non_personalized is not None and not ctx.personalized_allowed
        if rewritten:
            assert route.non_personalized is not None
            scope = non_personalized_scope(scope, route.non_personalized, guard.identity.identifying_headers)
        else:
            # An app that checks its items in process (`guardrail.inprocess`) decides for this caller
            # without resolving them again. Not on the non-personalized route: it gets nobody's identity.
            scope[RESOLVED] = resolved
        scope[ROUTE_TEMPLATE] = route.template  # the sidecar's proxy counts its traffic by it
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
        return responder

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
        tcf = guard.tcf
        tc_string = tcf.find(headers, scope["query_string"]) if tcf.mapping else None
        request = guard.request_signals(gpc, age, tc_string)
        accept_language = headers.get(b"accept-language")

        state: UserState | None = None
        unavailable = degraded = False
        if caller.user is not None:
            state, unavailable, degraded = await self._state_of(caller.user, guard)
        ctx, header = guard.context(
            caller.user,
            state,
            request,
            accept_language,
            store_unavailable=unavailable,
            degraded=degraded,
        )
        return Resolved(guard, caller, ctx, header, Asked(state, gpc, age, tc_string, accept_language, degraded))

    # -- lifespan, and a middleware that cannot start (guardrail/startup.py) ---------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A middleware that could not start has no runtime: its lifespan only says why.
        runtime = None if self.failure is not None else self.runtime
        await serve_lifespan(self.app, runtime, self.failure, scope, receive, send)

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.failure is not None
        first = not self._failure_logged
        self._failure_logged = True
        await answer_unavailable(self.failure, scope, receive, send, log=first)

    async def _state_of(self, user: str, guard: Guard) -> tuple[UserState, bool, bool]:
        """(state, store unavailable, degraded). When the store is down the policy's fail mode decides
        (`Guard.when_store_is_down`), and the last state seen, if any, still restricts: a topic the user
        muted stays hidden while the store is down. Minor rules do not need the store."""
        store = self.runtime.store
        try:
            state = await store.load(user)
        except StoreError:
            known = store.last_known(user)
            return (known if known is not None else DEFAULT_STATE), *guard.when_store_is_down()
        return (state if state is not None else DEFAULT_STATE), False, False
