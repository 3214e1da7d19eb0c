"""guardrail: a personalization guardrail for recommendation services."""

from guardrail.controls import UserState
from guardrail.engine import Action, Reason
from guardrail.errors import (
    ControlsError,
    GuardrailError,
    InvalidControls,
    PolicyError,
    StaleRevision,
    StoreError,
)
from guardrail.middleware import GuardrailMiddleware
from guardrail.policy.loading import load_policy, parse_policy
from guardrail.policy.models import Policy
from guardrail.reload import PolicyReloader
from guardrail.store import MemoryStore, Store, create_store

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ControlsError",
    "GuardrailError",
    "GuardrailMiddleware",
    "InvalidControls",
    "MemoryStore",
    "Policy",
    "PolicyError",
    "PolicyReloader",
    "Reason",
    "StaleRevision",
    "Store",
    "StoreError",
    "UserState",
    "create_store",
    "load_policy",
    "parse_policy",
]
