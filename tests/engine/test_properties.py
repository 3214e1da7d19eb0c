"""Properties of the engine that hold for every policy, user, request and list of items (issue 8).

Policies, states and items are drawn from realistic vocabularies (tests/strategies.py). Each test
decides whole lists through `check_items`, the loop the middleware runs, so the memo is exercised too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from guardrail.engine import Action, CompiledPolicy, ItemDecision, RequestSignals, UserContext, decide
from guardrail.engine.compiled import is_sensitive_category
from guardrail.engine.loop import check_items
from guardrail.policy.models import Policy
from guardrail.routes import RouteTable
from guardrail.state import UserState
from tests.engine.support import NOW
from tests.strategies import (
    examples,
    items,
    policies,
    request_signals,
    sale_or_share_or_gpc_signals,
    states,
    topic_names,
    uses_any,
)

# Each example builds (and for generated policies, validates) a policy: a few ms.
EXAMPLES = examples(60)
# Normal, open mode with the last state seen, closed mode with the store down.
STORE_CONDITIONS = st.sampled_from([(False, False), (True, False), (False, True)])


def context(
    compiled: CompiledPolicy,
    state: UserState | None,
    request: RequestSignals,
    condition: tuple[bool, bool] = (False, False),
) -> UserContext:
    degraded, unavailable = condition
    return UserContext(
        compiled,
        state,
        request,
        locale="en",
        now=NOW,
        degraded=degraded,
        store_unavailable=unavailable,
    )


def decisions(ctx: UserContext, batch: list[dict[str, Any]]) -> list[ItemDecision]:
    route = RouteTable(ctx.compiled.policy.routes).match("/recommendations", "GET")
    assert route is not None
    copies = [dict(item) for item in batch]
    return check_items(ctx, route.fields, copies, route.default_signals, annotate=False).decisions


@st.composite
def tightenings(draw: st.DrawFn, policy: Policy) -> tuple[str, Any]:
    """One control turned off (or one request signal turned on): a name and its argument."""
    sensitive = [name for name in policy.categories if is_sensitive_category(policy, name)]
    choices: list[tuple[str, st.SearchStrategy[Any]]] = [
        ("personalization off", st.none()),
        ("signal off", st.sampled_from(list(policy.signals))),
        ("mute", st.sampled_from(topic_names(policy))),
        ("revoke consent", st.sampled_from(list(policy.purposes))),
        ("gpc on", st.none()),
        ("minor", st.none()),
        ("tc string refuses", st.sampled_from(list(policy.purposes))),
    ]
    if sensitive:
        choices.append(("remove opt-in", st.tuples(st.sampled_from(sensitive), st.booleans())))
    kind, argument = draw(st.sampled_from(choices))
    return kind, draw(argument)


def tighten(state: UserState, request: RequestSignals, kind: str, argument: Any) -> tuple[UserState, RequestSignals]:
    def merged(current: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
        return {**current, **changes}

    if kind == "personalization off":
        return dataclasses.replace(state, personalization=False), request
    if kind == "signal off":
        return dataclasses.replace(state, signals=merged(state.signals, **{argument: False})), request
    if kind == "mute":
        return dataclasses.replace(state, muted=merged(state.muted, **{argument: None})), request
    if kind == "revoke consent":
        return dataclasses.replace(state, consent=merged(state.consent, **{argument: "denied"})), request
    if kind == "remove opt-in":
        name, delete = argument
        opt_ins = {key: value for key, value in state.sensitive.items() if key != name}
        if not delete:
            opt_ins[name] = False
        return dataclasses.replace(state, sensitive=opt_ins), request
    if kind == "gpc on":
        return state, request._replace(gpc=True)
    if kind == "minor":
        return state, request._replace(minor=True)
    assert kind == "tc string refuses"
    verdicts = dict(request.tcf or ())
    verdicts[argument] = False
    return state, request._replace(tcf=frozenset(verdicts.items()))


@EXAMPLES
@given(data=st.data(), condition=STORE_CONDITIONS)
def test_turning_a_control_off_never_shows_more(data: st.DataObject, condition: tuple[bool, bool]) -> None:
    policy = data.draw(policies(), "policy")
    compiled = CompiledPolicy(policy)
    state = data.draw(states(policy), "state")
    request = data.draw(request_signals(policy), "request")
    batch = data.draw(items(policy), "items")
    kind, argument = data.draw(tightenings(policy), "tightening")
    stricter_state, stricter_request = tighten(state, request, kind, argument)

    before = decisions(context(compiled, state, request, condition), batch)
    after = decisions(context(compiled, stricter_state, stricter_request, condition), batch)
    for item, old, new in zip(batch, before, after, strict=True):
        note(f"{item} : {old.action} {old.reasons} -> {new.action} {new.reasons}")
        if old.hidden:
            assert new.hidden, f"{kind} {argument!r} showed {item}"
        if old.action is Action.DISCREET:
            assert new.action is not Action.KEEP, f"{kind} {argument!r} made {item} less discreet"


@EXAMPLES
@given(data=st.data(), condition=STORE_CONDITIONS)
def test_gpc_hides_exactly_what_relies_on_sale_or_share(data: st.DataObject, condition: tuple[bool, bool]) -> None:
    policy = data.draw(policies(), "policy")
    compiled = CompiledPolicy(policy)
    state = data.draw(st.one_of(st.none(), states(policy)), "state")
    request = data.draw(request_signals(policy), "request")
    batch = data.draw(items(policy), "items")
    route = RouteTable(policy.routes).match("/recommendations", "GET")
    assert route is not None
    opted_out = sale_or_share_or_gpc_signals(policy)

    with_gpc = decisions(context(compiled, state, request._replace(gpc=True), condition), batch)
    without = decisions(context(compiled, state, request._replace(gpc=False), condition), batch)
    for item, on, off in zip(batch, with_gpc, without, strict=True):
        if uses_any(item, opted_out, route.default_signals):
            assert on.hidden, f"GPC kept {item}, which relies on {sorted(opted_out)}"
        else:
            # Nothing else: GPC changes no other decision (the explanation may mention it).
            assert (on.action, on.reasons) == (off.action, off.reasons), item


@EXAMPLES
@given(data=st.data(), condition=STORE_CONDITIONS)
def test_an_items_decision_does_not_depend_on_the_others(data: st.DataObject, condition: tuple[bool, bool]) -> None:
    policy = data.draw(policies(), "policy")
    compiled = CompiledPolicy(policy)
    state = data.draw(st.one_of(st.none(), states(policy)), "state")
    request = data.draw(request_signals(policy), "request")
    batch = data.draw(items(policy), "items")
    shuffled = data.draw(st.permutations(range(len(batch))), "order")
    warmup = data.draw(items(policy), "items decided before")

    alone = [decisions(context(compiled, state, request, condition), [item])[0] for item in batch]
    in_order = decisions(context(compiled, state, request, condition), batch)
    warmed = context(compiled, state, request, condition)
    decisions(warmed, warmup)  # the memo now holds other shapes
    reordered = decisions(warmed, [batch[index] for index in shuffled])
    by_item = dict(zip(shuffled, reordered, strict=True))
    for index, expected in enumerate(alone):
        assert in_order[index] == expected
        assert by_item[index] == expected


@examples(4)
@given(data=st.data())
def test_a_full_memo_starts_over_without_changing_decisions(data: st.DataObject) -> None:
    policy = data.draw(policies(), "policy")
    compiled = CompiledPolicy(policy)
    state = data.draw(states(policy), "state")
    batch = data.draw(items(policy, max_size=4), "items")
    expected = decisions(context(compiled, state, RequestSignals()), batch)
    ctx = context(compiled, state, RequestSignals())
    # Fill the memo to its limit with shapes no upstream would send, so that it is cleared midway.
    for n in range(4096):
        decide(ctx, [f"filler_{n}"], [])
    assert decisions(ctx, batch) == expected
