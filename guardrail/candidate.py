"""A candidate policy on live traffic (docs/integrate.md, "Run a candidate on live traffic").

For a sampled guarded response (`guardrail.sampling`) the candidate decides the same items for the
same user, state and request, as `guardrail diff` would on the recorded case: its own route's items
pointer and fields on the upstream's body, its own rules for age and TC strings, the store down when it
was down. Each item whose action differs from the live one counts in
`guardrail_candidate_changes_total{route, live, candidate}`; every item decided counts in
`guardrail_candidate_items_total{route}`. Nothing of it reaches the response.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

from guardrail.bodies import BadBody, read_json
from guardrail.engine import BadItem
from guardrail.guard import Guard
from guardrail.metrics import Metrics
from guardrail.pointer import PointerError, resolve
from guardrail.policy.loading import load_policy
from guardrail.policy.models import Policy
from guardrail.review import EMPTY_OVERLAY, Overlay
from guardrail.routes import GuardedRoute
from guardrail.runtime import Runtime
from guardrail.sampling import Sampled, Sampler, Taker

logger = logging.getLogger("guardrail")


def candidate_policy(candidate: Policy | str | os.PathLike[str]) -> Policy:
    """The candidate, loaded: a file that does not load raises `PolicyError` listing every problem."""
    return candidate if isinstance(candidate, Policy) else load_policy(candidate)


def check_rate(name: str, rate: float) -> float:
    if not 0 <= rate <= 1:
        raise ValueError(f"{name} is a share of requests, from 0 to 1, not {rate}")
    return rate


def sample_for(runtime: Runtime, *takers: Taker | None) -> None:
    """Sample guarded responses for these takers (None: not there); with none, sample nothing."""
    present = [taker for taker in takers if taker is not None]
    if not present:
        runtime.sampler = None
    elif runtime.sampler is None:
        runtime.sampler = Sampler(present, runtime.metrics.candidate_dropped)
    else:
        runtime.sampler.takers = present


class Candidate:
    """Decides sampled responses with the candidate policy and counts where it differs from the live one."""

    def __init__(self, policy: Policy, rate: float, metrics: Metrics, overlay: Overlay = EMPTY_OVERLAY) -> None:
        self.rate = check_rate("candidate_rate", rate)
        self.metrics = metrics
        self.use(policy, overlay)

    def use(self, policy: Policy, overlay: Overlay = EMPTY_OVERLAY) -> None:
        """Decide with `policy` and the reviewers' decisions in force (`overlay`), as the live policy is
        served: a reviewer's block is no difference between the two."""
        # The candidate never resolves who asks (the live caller is given), so it needs no identity
        # source of its own: a JWT key it names need not be at hand.
        self.guard: Guard = Guard.for_scenarios(policy, overlay)
        self._routes: dict[str, GuardedRoute | None] = {}

    @property
    def policy(self) -> Policy:
        return self.guard.written

    def _route(self, template: str) -> GuardedRoute | None:
        """The candidate's route for the live route `template`, as `guardrail diff` finds it."""
        try:
            return self._routes[template]
        except KeyError:
            pass
        try:
            found: GuardedRoute | None = self.guard.route_named(template)
        except LookupError:
            found = None
        self._routes[template] = found
        return found

    def take(self, sampled: Sampled) -> None:
        guard = self.guard
        route = self._route(sampled.route)
        if route is None:
            return  # the candidate does not guard this route: nothing to compare
        try:
            document, _ = read_json(sampled.body)
            _, _, items = resolve(document, route.pointer)
        except (BadBody, PointerError):
            return
        if type(items) is not list or len(items) != len(sampled.live):
            return  # another list of items than the live one decided: not comparable item by item
        asked = sampled.asked
        # The store down: the candidate's own fail mode decides, as a scenario with `store: down`.
        unavailable, degraded = (
            guard.when_store_is_down() if asked.degraded and asked.state is not None else (False, False)
        )
        ctx, _ = guard.context(
            sampled.user,
            asked.state,
            guard.request_signals(asked.gpc, asked.age, asked.tc_string),
            asked.accept_language,
            store_unavailable=unavailable,
            degraded=degraded,
        )
        try:
            checked = guard.check(ctx, route.fields, items, route.default_signals, annotate=False)
        except BadItem:
            return
        changes: Counter[tuple[str, str]] = Counter()
        for live, now in zip(sampled.live, checked.decisions, strict=True):
            if live.action is not now.action:
                changes[live.action.value, now.action.value] += 1
        metrics = self.metrics
        template = sampled.route
        metrics.candidate_items.labels(template).inc(len(items))
        for (live_action, candidate_action), count in changes.items():
            metrics.candidate_changes.labels(template, live_action, candidate_action).inc(count)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
