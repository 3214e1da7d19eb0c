"""`GuardrailMiddleware`: the pure-ASGI guardrail in front of a recommendation app."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CollectorRegistry
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail._version import __version__
from guardrail.engine import CheckedItems, RequestSignals
from guardrail.errors import StoreError
from guardrail.guard import Guard
from guardrail.logs import user_hash
from guardrail.mediation import FORWARDING, FORWARDING_PREFIX, GUARDRAIL_CONTEXT
from guardrail.metrics import metrics_for
from guardrail.paths import PathError
from guardrail.policy.loading import load_policy
from guardrail.policy.models import Policy
from guardrail.representation import upstream_scope
from guardrail.responder import GuardedResponder
from guardrail.routes import API, GuardedRoute
from guardrail.settings import Settings
from guardrail.speedups import ACCELERATED
from guardrail.state import DEFAULT_STATE, UserState
from guardrail.store import Store, create_store
from guardrail.web.problem import problem

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

logger = logging.getLogger("guardrail")

ReadinessCheck = Callable[[], Awaitable[str | None]]

# The GPC support statement (W3C GPC, at /.well-known/gpc.json): this service honours Sec-GPC. lastUpdate is when the
# guardrail's GPC handling last changed. Served with the API (a policy's `prefix: null` turns both off).
_GPC_STATEMENT = Response(
    orjson.dumps({"gpc": True, "lastUpdate": "2026-11-26"}),
    media_type="application/json",
    headers={"Cache-Control": "public, max-age=86400"},
)


class GuardrailMiddleware:
    """Check every item a guarded route returns against consent, invasiveness and the user's controls.

    `policy` is a loaded `Policy` or the path of a policy file; `store` a store URL (`memory://`,
    `redis://...`) or a store object, by default `GUARDRAIL_STORE` or `memory://`; `registry` the
    Prometheus registry for the metrics (the global one by default).

    A store made from a URL here counts into this middleware's metrics. A store object keeps the
    metrics it was made with: `create_store(url, metrics=metrics_for(registry))` counts on the same
    registry, and without `metrics` its cache lookups and errors are not counted.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: Policy | str | os.PathLike[str],
        store: Store | str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.app = app
        if store is None:
            store = Settings().store  # GUARDRAIL_STORE, else memory://
        if not isinstance(policy, Policy):
            policy = load_policy(policy)
        self.metrics = metrics_for(registry)
        self.store: Store = (
            create_store(
                store,
                metrics=self.metrics,
                decisions_per_user=policy.decisions_per_user,
                retention=timedelta(days=policy.decision_retention_days),
                timeout=policy.store_timeout_ms / 1000,
            )
            if isinstance(store, str)
            else store
        )
        self._ids = itertools.count(1)
        # Unique across replicas and restarts without coordination; sequential within a process.
        self._id_prefix = secrets.token_hex(5)
        self._children: dict[tuple[str, str, str | None], Counter] = {}
        self._overhead: Histogram = self.metrics.overhead
        self._tally = self.metrics.tally
        # What /readyz checks besides the store, by name: None when ready, else why not.
        self.readiness_checks: dict[str, ReadinessCheck] = {}
        self.guard = self._make_guard(policy)
        # Which loop runs is said once at start; the slower one as a warning, so that it is seen.
        logger.log(
            logging.INFO if ACCELERATED else logging.WARNING,
            "guardrail %s started; the per-item loop runs in %s",
            __version__,
            "C" if ACCELERATED else "Python, about twice as slow (the C extension is not built: see docs/install.md)",
            extra={"version": __version__, "accelerated": ACCELERATED},
        )

    # -- policy -------------------------------------------------------------------------------

    def _make_guard(self, policy: Policy) -> Guard:
        from guardrail.web.api import build_api  # the API imports this module's types

        guard = Guard(policy, count_tc_string=lambda result: self.metrics.tc_strings.labels(result).inc())
        guard.api = build_api(self, guard)
        self.metrics.set_policy(policy.policy_id)
        return guard

    def use_policy(self, policy: Policy) -> None:
        """Swap in a new policy atomically: running requests finish on the one they started with."""
        self.guard = self._make_guard(policy)

    @property
    def policy(self) -> Policy:
        return self.guard.policy

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """Make `/readyz` also depend on `check` (an async callable: None when ready, else a short
        reason, shown to anyone who asks, so nothing internal), reported under `name`."""
        self.readiness_checks[name] = check

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        guard = self.guard
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
        elif target is API:
            await guard.api(scope, receive, send)
        else:
            await _GPC_STATEMENT(scope, receive, send)

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
        # GPC is exactly "1" after trimming; with repeated headers (joined with commas by the screen,
        # as they may also arrive, RFC 9110 §5.3) one "1" is enough.
        sec_gpc = headers.get(b"sec-gpc")
        gpc = sec_gpc is not None and any(part.strip(b" \t") == b"1" for part in sec_gpc.split(b","))
        caller = guard.identity.resolve(scope, headers)
        age = caller.age
        minor = age is not None and age < guard.policy.minors.age_of_majority
        tcf = guard.tcf
        tc_string = tcf.find(headers, scope["query_string"]) if tcf.mapping else None
        request = RequestSignals(gpc, minor, tcf.verdict(tc_string) if tc_string is not None else None)

        state: UserState | None = None
        unavailable = degraded = False
        if caller.user is not None:
            state, unavailable, degraded = await self._state_of(caller.user, guard.policy)
        ctx, header = guard.context(
            caller.user,
            state,
            request,
            headers.get(b"accept-language"),
            store_unavailable=unavailable,
            degraded=degraded,
        )
        # The upstream is asked only for what can be checked: whole JSON, in a coding the guardrail reads.
        scope = upstream_scope(scope, headers)
        rewritten = route.non_personalized is not None and not ctx.personalized_allowed
        # What was decided, told to the app before it runs (docs/architecture.md §7).
        context = (GUARDRAIL_CONTEXT, header)
        if rewritten:
            scope = self._non_personalized(scope, route, guard, context)
        else:
            scope = {**scope, "headers": [*scope["headers"], context]}
        responder = GuardedResponder(
            self,
            guard,
            route,
            ctx,
            caller,
            send,
            rewritten=rewritten,
            head=scope["method"] == "HEAD",
        )
        before = time.perf_counter() - started
        await self.app(scope, receive, responder)
        self._tally.add(self._count(route.template, "requests", responder.outcome))
        overhead = before + responder.overhead
        self._tally.observe(self._overhead, overhead)
        if logger.isEnabledFor(logging.INFO):
            self._log_request(responder, caller.user, started, overhead)

    async def _state_of(self, user: str, policy: Policy) -> tuple[UserState, bool, bool]:
        """(state, store unavailable, degraded). Closed: as if no consent; open: purpose defaults.

        Either way the last state seen, if any, still restricts: a topic the user muted stays
        hidden while the store is down (closed mode trusts none of its consents)."""
        try:
            state = await self.store.load(user)
        except StoreError:
            known = self.store.last_known(user)
            if policy.fail_mode == "closed":
                return (known if known is not None else DEFAULT_STATE), True, True
            # Open: sensitive opt-ins are not trusted while degraded (the engine hides those items),
            # and minor rules do not need the store.
            return (known if known is not None else DEFAULT_STATE), False, True
        return (state if state is not None else DEFAULT_STATE), False, False

    @staticmethod
    def _non_personalized(scope: Scope, route: GuardedRoute, guard: Guard, context: tuple[bytes, bytes]) -> Scope:
        """Ask the upstream for the non-personalized route, with nothing that identifies the user:
        profiling is then impossible by construction, not merely filtered afterwards (DSA Art. 38)."""
        assert route.non_personalized is not None
        strip = {name.encode("latin-1") for name in route.non_personalized.strip_headers}
        # Forwarding headers, even a trusted proxy's, name the client (X-Forwarded-For, True-Client-IP)
        # or would steer the app back to the personalized route (X-Original-URL).
        strip |= guard.identity.identifying_headers | FORWARDING
        target = route.non_personalized.rewrite_to
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in strip and not name.startswith(FORWARDING_PREFIX)
        ]
        return {
            **scope,
            "path": target,
            "raw_path": target.encode(),
            "headers": [*headers, context],
            # The client's address identifies them too: the app (or the sidecar's proxy, which would
            # put it in X-Forwarded-For) does not get it.
            "client": None,
        }

    # -- what the responder reports back ------------------------------------------------------

    def next_decision_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def _count(self, route: str, metric: str, label: str | None = None) -> Counter:
        key = (route, metric, label)
        child = self._children.get(key)
        if child is None:
            family = getattr(self.metrics, metric)
            child = self._children[key] = family.labels(route) if label is None else family.labels(route, label)
        return child

    def after_decision(self, responder: GuardedResponder, checked: CheckedItems) -> None:
        route = responder.route.template
        add = self._tally.add
        hidden = checked.hidden
        kept = len(checked.kept) - checked.discreet
        for action, count in (("keep", kept), ("discreet", checked.discreet), ("hide", len(hidden))):
            if count:
                add(self._count(route, "items", action), count)
        if hidden:
            by_reason: dict[str, int] = {}
            for decision in hidden:
                first = decision.reasons[0]
                by_reason[first] = by_reason.get(first, 0) + 1
            for reason, count in by_reason.items():
                add(self._count(route, "hidden_items", reason), count)
        if checked.unknown:
            add(self._count(route, "unknown_categories"), checked.unknown)
        record = responder.record(checked)
        if record is not None:
            self.store.record(record)

    @staticmethod
    def _log_request(responder: GuardedResponder, user: str | None, started: float, overhead: float) -> None:
        logger.info(
            "guarded request",
            extra={
                "route": responder.route.template,
                "outcome": responder.outcome,
                "hidden": responder.hidden_count,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "overhead_ms": round(overhead * 1000, 3),
                "decision": responder.decision_id,
                "user": user_hash(user) if user is not None else None,
            },
        )

    def count_fail_mode(self, mode: str) -> None:
        self.metrics.fail_mode.labels(mode).inc()

    def log_unchecked(self, responder: GuardedResponder, kind: str, detail: str, outcome: str) -> None:
        logger.warning(
            "upstream body on %s not checked (%s: %s); %s",
            responder.route.template,
            kind,
            detail,
            outcome,
            extra={"decision": responder.decision_id, "route": responder.route.template},
        )
