"""What a checked page offers to human review (docs/review.md): the unknown categories it carried, and
the items a policy's `review: {invasiveness_at}` flags. Read after the response is sent; the store
writes them in batches."""

from __future__ import annotations

import time
from typing import Any

from guardrail.engine import CheckedItems, CompiledPolicy, ItemFields
from guardrail.review import Sighting


def sightings(
    compiled: CompiledPolicy,
    flag_at: int | None,
    route: str,
    fields: ItemFields,
    items: list[Any],
    checked: CheckedItems,
) -> list[Sighting]:
    """The page's unknown categories (one sighting per category and item) and flagged items: kept
    items scoring `flag_at` or more. Nothing is looked at item by item unless the page has some."""
    flagged = flag_at is not None and _any_flagged(checked, flag_at)
    if not checked.unknown and not flagged:
        return []
    now = time.time()
    found: list[Sighting] = []
    for item, item_id, decision in zip(items, checked.item_ids, checked.decisions, strict=True):
        if decision.unknown:
            for sent in item.get(fields.categories) or ():
                category = compiled.category_id(sent)
                if compiled.is_unknown(category):
                    found.append(Sighting("unknown_category", category, route, str(item_id), now))
        if flagged and not decision.hidden and decision.score >= flag_at:  # type: ignore[operator]
            found.append(Sighting("flagged_item", str(item_id), route, str(item_id), now))
    return found


def _any_flagged(checked: CheckedItems, flag_at: int) -> bool:
    decisions = checked.distinct if checked.distinct is not None else checked.decisions
    return any(not decision.hidden and decision.score >= flag_at for decision in decisions)
