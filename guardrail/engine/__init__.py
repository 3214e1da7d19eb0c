"""The evaluation engine: pure, synchronous, no I/O (docs/architecture.md §1)."""

from guardrail.engine.compiled import CompiledPolicy
from guardrail.engine.context import RequestSignals, UserContext
from guardrail.engine.decisions import PRECEDENCE, Action, ItemDecision, Reason
from guardrail.engine.evaluate import decide

__all__ = [
    "PRECEDENCE",
    "Action",
    "CompiledPolicy",
    "ItemDecision",
    "Reason",
    "RequestSignals",
    "UserContext",
    "decide",
]
