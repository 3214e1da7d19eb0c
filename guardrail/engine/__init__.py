"""The evaluation engine: pure, synchronous, no I/O (docs/architecture.md §1)."""

from guardrail.engine.compiled import CompiledPolicy
from guardrail.engine.context import RequestSignals, UserContext
from guardrail.engine.decisions import PRECEDENCE, Action, ItemDecision, Reason
from guardrail.engine.evaluate import decide
from guardrail.engine.loop import BadItem, CheckedItems, ItemFields, check_items

__all__ = [
    "PRECEDENCE",
    "Action",
    "BadItem",
    "CheckedItems",
    "CompiledPolicy",
    "ItemDecision",
    "ItemFields",
    "Reason",
    "RequestSignals",
    "UserContext",
    "check_items",
    "decide",
]
