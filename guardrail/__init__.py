"""guardrail: a personalization guardrail for recommendation services."""

from guardrail._version import __version__ as __version__
from guardrail.engine import Action, Reason
from guardrail.errors import (
    ControlsError,
    GuardrailError,
    InvalidControls,
    MissingExtra,
    PolicyError,
    StaleRevision,
    StoreError,
)
from guardrail.middleware import GuardrailMiddleware
from guardrail.policy.loading import load_policy, parse_policy
from guardrail.policy.models import Policy
from guardrail.reload import PolicyReloader
from guardrail.state import UserState
from guardrail.store import MemoryStore, Store, create_store

__all__ = [
    "Action",
    "ControlsError",
    "GuardrailError",
    "GuardrailMiddleware",
    "InvalidControls",
    "MemoryStore",
    "MissingExtra",
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
