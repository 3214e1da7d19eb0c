"""Per-user, per-request facts, boiled down once so that each item costs a few dict lookups.

A `UserContext` is built from the policy, the user's stored state (or none) and what the request
itself says (GPC, TC string, age). It answers, for every signal of the policy, "may it be used, and
if not, why", and memoizes the decision for each distinct item shape it sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from guardrail.caching import BoundedCache
from guardrail.engine.compiled import CompiledPolicy
from guardrail.engine.decisions import PRECEDENCE, Action, ItemDecision, Reason
from guardrail.state import UserState

# Distinct item shapes a context remembers the decision of.
MEMO_SIZE = 4096
# What turns a kept item's facts into the explanation attached to it: (context, action, signals relied on,
# inferred) → a JSON object. The engine calls it once per distinct decision and never renders text itself
# (guardrail.explain.render.explanation is the one the guardrail gives it).
Explainer = Callable[["UserContext", Action, Sequence[str], bool], dict[str, Any]]


class RequestSignals(NamedTuple):
    """What the request says about consent, independent of the store.

    A NamedTuple, not a dataclass: it is made per request and hashed as part of the
    context cache key, and a tuple does both in C."""

    gpc: bool = False
    minor: bool = False
    # (purpose, allowed) pairs decided by a TC string; purposes it does not cover are absent.
    # A frozenset, not a dict, so that the signals can key the context cache.
    tcf: frozenset[tuple[str, bool]] | None = None


NO_SIGNALS = RequestSignals()


class UserContext:
    __slots__ = (
        "compiled",
        "degraded",
        "explain",
        "gpc",
        "locale",
        "memo",
        "minor",
        "muted",
        "paused_until",
        "personalized_allowed",
        "sensitive_opt_ins",
        "signal_reasons",
        "valid_until",
    )

    def __init__(
        self,
        compiled: CompiledPolicy,
        state: UserState | None,
        request: RequestSignals,
        *,
        locale: str,
        now: datetime,
        store_unavailable: bool = False,
        degraded: bool = False,
        explain: Explainer | None = None,
    ) -> None:
        policy = compiled.policy
        self.compiled = compiled
        self.explain = explain  # None: decisions carry facts only
        self.locale = locale
        self.gpc = request.gpc
        self.minor = request.minor
        self.degraded = degraded or store_unavailable
        # Keyed by an item's shape (guardrail.engine.loop.memo_key); the C loop reads its dict directly.
        self.memo: BoundedCache[tuple[object, ...], ItemDecision] = BoundedCache(MEMO_SIZE)
        known = state if state is not None else UserState()
        self.muted = frozenset(known.active_mutes(now))
        # While the user has paused personal suggestions, they are off as if personalization were (§6).
        self.paused_until = known.pause_end(now) if state is not None and not store_unavailable else None
        upcoming = [until for until in known.muted.values() if until is not None and until > now]
        if self.paused_until is not None:
            upcoming.append(self.paused_until)
        # A snooze or a pause ending makes this context stale: the caller rebuilds it after this moment.
        self.valid_until = min(upcoming).timestamp() if upcoming else float("inf")
        self.sensitive_opt_ins = frozenset(name for name, on in known.sensitive.items() if on)

        tcf = dict(request.tcf) if request.tcf is not None else {}
        purpose_reasons: dict[str, list[Reason]] = {}
        for name, purpose in policy.purposes.items():
            reasons: list[Reason] = []
            if request.gpc and purpose.follows_gpc:
                reasons.append(Reason.GPC_OPT_OUT)
            if store_unavailable:
                reasons.append(Reason.STORE_UNAVAILABLE)
            elif state is None:
                # Anonymous callers: nobody to ask, so nothing personal (docs/architecture.md §7).
                reasons.append(Reason.NO_CONSENT)
            else:
                tcf_verdict = tcf.get(name)
                if tcf_verdict is False:
                    reasons.append(Reason.TCF_NO_CONSENT)
                elif tcf_verdict is None:
                    stored = known.consent.get(name, purpose.default)
                    if stored != "granted":
                        reasons.append(Reason.NO_CONSENT)
            purpose_reasons[name] = reasons

        self.signal_reasons: dict[str, tuple[Reason, ...]] = {}
        for name, info in compiled.signals.items():
            reasons = list(purpose_reasons.get(info.purpose, [Reason.NO_CONSENT]))
            if request.gpc and info.sale_or_share:
                reasons.append(Reason.GPC_OPT_OUT)
            if state is not None and not store_unavailable:
                if not known.personalization or self.paused_until is not None:
                    reasons.append(Reason.PERSONALIZATION_OFF)
                if known.signals.get(name) is False:
                    reasons.append(Reason.SIGNAL_OFF)
            self.signal_reasons[name] = tuple(sorted(set(reasons), key=PRECEDENCE.__getitem__))
        self.personalized_allowed = self._any_signal_allowed()

    def _any_signal_allowed(self) -> bool:
        return not self.minor and any(not reasons for reasons in self.signal_reasons.values())
