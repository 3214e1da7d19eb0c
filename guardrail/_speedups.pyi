from collections.abc import Callable
from typing import Any

from guardrail.engine import ItemDecision

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
    annotate: bool,
    miss: Callable[[list[str], list[str], float | None, bool], ItemDecision],
    empty: list[str],
) -> tuple[list[ItemDecision], list[str | int], list[dict[str, Any]], list[ItemDecision], int, int] | None: ...
def has_digit_run(body: bytes, length: int) -> bool: ...
