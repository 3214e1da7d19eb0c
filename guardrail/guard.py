"""A policy made ready to serve: compiled rules, routes, identity, locales, cached user contexts.

The middleware holds one `Guard` and reads it once per request, so a reloaded policy swaps in
atomically: requests already running finish on the guard they started with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any

from guardrail.caching import BoundedCache
from guardrail.callers import Caller
from guardrail.consent.tcf_policy import TcfReader
from guardrail.context_header import context_header
from guardrail.engine import CheckedItems, CompiledPolicy, ItemFields, RequestSignals, UserContext, check_items
from guardrail.engine.blocks import block_items
from guardrail.explain.render import Notices, explanation
from guardrail.identity import Identify, IdentityResolver
from guardrail.locale import LocaleNegotiator
from guardrail.mediation import HeaderScreen
from guardrail.policy.models import Category, Policy
from guardrail.policy.models import Identity as IdentitySettings
from guardrail.representation import REQUEST_HEADERS as REPRESENTATION_HEADERS
from guardrail.review import EMPTY_OVERLAY, Overlay, Sighting
from guardrail.review_feed import sightings
from guardrail.routes import GuardedRoute, RouteTable
from guardrail.state import UserState

CONTEXT_CACHE_SIZE = 10_000
_REQUEST_HEADERS = frozenset({b"accept-language", b"sec-gpc"}) | REPRESENTATION_HEADERS

_ContextKey = tuple[str | None, RequestSignals, str, bool, bool]
_SharedKey = tuple[Hashable, RequestSignals, str, bool, bool]
# A context and its `Guardrail-Context` header, made together: contexts are shared by the users whose
# controls mean the same, so most requests find both made.
ContextWithHeader = tuple[UserContext, bytes]


class Guard:
    def __init__(
        self,
        policy: Policy,
        count_tc_string: Callable[[str], None] | None = None,
        *,
        identify: Identify | None = None,
        overlay: Overlay = EMPTY_OVERLAY,
    ) -> None:
        # The policy as written, and as served: with the reviewers' decisions in force (docs/review.md).
        self.written = policy
        self.overlay = overlay
        policy = with_overlay(policy, overlay)
        self.policy = policy
        self.review = policy.review
        self.compiled = CompiledPolicy(policy)
        self.routes = RouteTable(
            policy.routes, case_insensitive=policy.case_insensitive_paths, api_prefix=policy.prefix
        )
        role_claim = policy.review.role_claim if policy.review is not None else None
        self.identity = IdentityResolver(policy.identity, identify, role_claim=role_claim)
        self.locales = LocaleNegotiator(policy.locales, policy.default_locale)
        self.prefix = policy.prefix
        self.tcf = TcfReader(policy, count=count_tc_string)
        # Every request header the hot path reads, taken in one pass over the headers. It belongs to
        # the guard, not the middleware: a reloaded policy may read other headers, and both swap together.
        self.wanted = self.identity.wanted | _REQUEST_HEADERS | self.tcf.wanted
        self.screen = HeaderScreen(self.identity, self.wanted)
        self.notice = Notices(self.compiled)
        self._contexts: BoundedCache[_ContextKey, tuple[UserState | None, ContextWithHeader]] = BoundedCache(
            CONTEXT_CACHE_SIZE
        )
        self._shared: BoundedCache[_SharedKey, ContextWithHeader] = BoundedCache(CONTEXT_CACHE_SIZE)

    def is_reviewer(self, caller: Caller) -> bool:
        """Whether the caller may work the review queue: a listed id, or the role in a verified token."""
        review = self.review
        if review is None or caller.user is None:
            return False
        return caller.user in review.reviewers or (review.role is not None and review.role in caller.roles)

    def check(
        self, ctx: UserContext, fields: ItemFields, items: list[Any], defaults: tuple[str, ...], **how: bool
    ) -> CheckedItems:
        """Every item decided (`check_items`, with `annotate` and `as_dicts` as `how` says), and the items a
        reviewer blocked hidden for everyone."""
        checked = check_items(ctx, fields, items, defaults, **how)
        return block_items(checked, items, self.compiled.blocked) if self.compiled.blocked else checked

    def for_review(self, route: str, fields: ItemFields, items: list[Any], checked: CheckedItems) -> list[Sighting]:
        """What the page offers to human review: unknown categories, and items over `review.invasiveness_at`."""
        flag_at = self.review.invasiveness_at if self.review is not None else None
        return sightings(self.compiled, flag_at, route, fields, items, checked)

    @classmethod
    def for_scenarios(cls, policy: Policy, overlay: Overlay = EMPTY_OVERLAY) -> Guard:
        """A guard for written-down users (`guardrail test`, `explain`, `diff`, a candidate policy). They are
        named, not identified, so the policy's identity source is not used: its JWT key (an environment
        variable on the servers) need not be at hand."""
        return cls(policy.model_copy(update={"identity": IdentitySettings()}), overlay=overlay)

    def route_named(self, path: str | None) -> GuardedRoute:
        """The guarded route of `path`: the policy's spelling (`/feed/*`) or a request path it covers
        (`/feed/top`); the policy's first route when None. `LookupError` names the routes there are."""
        routes = self.policy.routes
        wanted = path if path is not None else routes[0].path
        request_path = wanted[:-1] if wanted.endswith("*") else wanted
        for method in dict.fromkeys(method for route in routes for method in route.methods):
            found = self.routes.match(request_path or "/", method)
            if found is not None:
                return found
        names = ", ".join(route.path for route in routes)
        raise LookupError(f"the policy has no route {wanted!r}; its routes: {names}")

    def request_signals(self, gpc: bool, age: int | None, tc_string: str | None) -> RequestSignals:
        """What the request says, as this policy reads it: a minor by its age of majority, consent by its
        TC-string mapping (a string it maps nothing from says nothing)."""
        minor = age is not None and age < self.policy.minors.age_of_majority
        tcf = self.tcf
        return RequestSignals(gpc, minor, tcf.verdict(tc_string) if tc_string is not None and tcf.mapping else None)

    def when_store_is_down(self) -> tuple[bool, bool]:
        """(store unavailable, degraded) while the store cannot answer: closed mode trusts none of the
        user's consents; open mode keeps them but not sensitive opt-ins (the engine decides so)."""
        return self.policy.fail_mode == "closed", True

    def context(
        self,
        user: str | None,
        state: UserState | None,
        request: RequestSignals,
        accept_language: bytes | None,
        *,
        store_unavailable: bool = False,
        degraded: bool = False,
    ) -> ContextWithHeader:
        """The user's context and its `Guardrail-Context`, reused while their state object and the
        request's signals are the same.

        Users whose controls say the same thing share one context (and its memo of decisions): a
        context costs kilobytes, and most users are in one of a few states. The per-user entry only
        remembers which shared context that user's state object maps to.
        """
        locale = self.locales.choose(state.locale if state is not None else None, accept_language)
        key = (user, request, locale, store_unavailable, degraded)
        entry = self._contexts.get(key)
        if entry is not None and entry[0] is state and time.time() < entry[1][0].valid_until:
            return entry[1]
        shared_key = (_meaning(state), request, locale, store_unavailable, degraded)
        served = self._shared.get(shared_key)
        if served is None or time.time() >= served[0].valid_until:
            ctx = UserContext(
                self.compiled,
                state,
                request,
                locale=locale,
                now=datetime.now(UTC),
                store_unavailable=store_unavailable,
                degraded=degraded,
                explain=explanation,
            )
            served = self._shared.put(shared_key, (ctx, context_header(ctx)))
        self._contexts.put(key, (state, served))
        return served


def with_overlay(policy: Policy, overlay: Overlay) -> Policy:
    """The policy with the reviewers' decisions merged in. What the policy file says wins: a category it
    defines, or an alias it writes, is the team's, whatever a reviewer decided before it did."""
    if not overlay:
        return policy
    categories = {
        name: Category(sensitive=d.sensitive, label=dict(d.label or {}))
        for name, d in overlay.categories.items()
        if name not in policy.categories
    }
    categories.update(policy.categories)
    aliases = {
        name: d.alias_of
        for name, d in overlay.aliases.items()
        if d.alias_of is not None and name not in categories and d.alias_of in categories
    }
    aliases.update(policy.category_aliases)
    blocked = sorted({*policy.blocked_items, *overlay.blocked})
    return policy.model_copy(update={"categories": categories, "category_aliases": aliases, "blocked_items": blocked})


def _meaning(state: UserState | None) -> Hashable:
    """What in a state decides items: not its revision, time of change or locale (keyed apart)."""
    if state is None:
        return None  # anonymous: not the same as a user who never changed anything
    return (
        state.personalization,
        frozenset(state.consent.items()),
        frozenset(state.signals.items()),
        frozenset(state.muted.items()),
        frozenset(state.sensitive.items()),
        state.paused_until,
    )
