from collections.abc import Callable
from typing import Any

from guardrail.engine import ItemDecision, Reason

DISTINCT: int

def check(
    items: list[Any],
    id_field: str,
    categories_field: str,
    signals_field: str,
    age_field: str,
    inferred_field: str,
    defaults: list[str],
    memo: dict[object, ItemDecision],
    fresh_seconds: float,
    annotate: str | None,
    miss: Callable[[list[str], list[str], float | None, bool], ItemDecision],
    empty: list[str],
) -> (
    tuple[
        list[ItemDecision],
        list[str | int],
        list[dict[str, Any]],
        list[ItemDecision],
        int,
        int,
        list[ItemDecision] | None,
        str | None,
        dict[tuple[Reason, str | None], int],
        bool,
    ]
    | None
): ...
def has_digit_run(body: bytes, length: int) -> bool: ...
def link(
    items: list[Any],
    decisions: list[ItemDecision],
    id_field: str,
    base: bytes,
    fragment: Callable[[bytes], Any],
    segment: Callable[[str | int], str],
) -> bool: ...
