"""Items a reviewer blocked for everyone (docs/review.md): hidden after the per-item loop, by id.

The loop decides by an item's shape (categories, signals), and both loops (Python and C) share that
memo; a block is about one item, so it is applied here, to the checked page, and only when the policy
blocks something. A blocked item carries the reason `blocked_by_review` alone."""

from __future__ import annotations

from typing import Any

from guardrail.engine.decisions import Action, ItemDecision, Reason
from guardrail.engine.loop import CheckedItems

_BLOCKED = (Reason.BLOCKED_BY_REVIEW,)
_KIND = (Reason.BLOCKED_BY_REVIEW, None)


def blocked_positions(item_ids: list[str | int], blocked: frozenset[str]) -> list[int]:
    """The positions of the page's items whose id (an integer by its digits) is blocked."""
    return [index for index, item_id in enumerate(item_ids) if str(item_id) in blocked]


def block_items(checked: CheckedItems, items: list[Any], blocked: frozenset[str]) -> CheckedItems:
    """`checked` with the blocked items hidden; the same object when the page has none."""
    if not blocked:
        return checked
    positions = blocked_positions(checked.item_ids, blocked)
    if not positions:
        return checked
    decisions = list(checked.decisions)
    hidden_by_kind = dict(checked.hidden_by_kind)
    discreet = checked.discreet
    for index in positions:
        before = decisions[index]
        if before.hidden:
            key = before.notice_key
            assert key is not None  # a hidden decision has a deciding reason
            hidden_by_kind[key] -= 1
            if not hidden_by_kind[key]:
                del hidden_by_kind[key]
        else:
            discreet -= before.discreet
        decisions[index] = ItemDecision(
            Action.HIDE, _BLOCKED, before.score, before.because, None, None, before.unknown, before.categories
        )
        hidden_by_kind[_KIND] = hidden_by_kind.get(_KIND, 0) + 1
    # Kept items are the page's own objects, in order: the ones left are those not blocked.
    gone = {id(items[index]) for index in positions}
    kept = [item for item in checked.kept if id(item) not in gone]
    for item in items:
        if id(item) in gone and type(item) is dict:
            item.pop("explanation", None)
    hidden = [decision for decision in decisions if decision.hidden]
    # The page's distinct decisions changed: a record then keeps each item's decision as it is.
    return checked._replace(
        decisions=decisions,
        kept=kept,
        hidden=hidden,
        discreet=discreet,
        distinct=None,
        per_item=None,
        hidden_by_kind=hidden_by_kind,
    )
