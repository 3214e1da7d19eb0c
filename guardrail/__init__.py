"""guardrail: a personalization guardrail for recommendation services.

The public names load on first use (PEP 562), so that importing one layer, such as `guardrail.engine`
or `guardrail.store`, loads that layer alone and not the HTTP surface (docs/architecture.md, the import tree).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from guardrail._version import __version__ as __version__

if TYPE_CHECKING:
    from guardrail.context_header import GuardrailContext as GuardrailContext
    from guardrail.context_header import parse_guardrail_context as parse_guardrail_context
    from guardrail.embed import Guardrail as Guardrail
    from guardrail.embed import install as install
    from guardrail.engine import Action as Action
    from guardrail.engine import Reason as Reason
    from guardrail.errors import ControlsError as ControlsError
    from guardrail.errors import GuardrailError as GuardrailError
    from guardrail.errors import InvalidControls as InvalidControls
    from guardrail.errors import MissingExtra as MissingExtra
    from guardrail.errors import PolicyError as PolicyError
    from guardrail.errors import StaleRevision as StaleRevision
    from guardrail.errors import StoreError as StoreError
    from guardrail.inprocess import Checked as Checked
    from guardrail.inprocess import GuardedJSONResponse as GuardedJSONResponse
    from guardrail.inprocess import InProcess as InProcess
    from guardrail.middleware import GuardrailMiddleware as GuardrailMiddleware
    from guardrail.policy.loading import load_policy as load_policy
    from guardrail.policy.loading import parse_policy as parse_policy
    from guardrail.policy.models import Policy as Policy
    from guardrail.reload import PolicyReloader as PolicyReloader
    from guardrail.state import UserState as UserState
    from guardrail.store import MemoryStore as MemoryStore
    from guardrail.store import Store as Store
    from guardrail.store import create_store as create_store

# Each public name, and the module it lives in.
_WHERE = {
    "Action": "guardrail.engine",
    "Checked": "guardrail.inprocess",
    "ControlsError": "guardrail.errors",
    "Guardrail": "guardrail.embed",
    "GuardrailError": "guardrail.errors",
    "GuardedJSONResponse": "guardrail.inprocess",
    "GuardrailContext": "guardrail.context_header",
    "GuardrailMiddleware": "guardrail.middleware",
    "InProcess": "guardrail.inprocess",
    "InvalidControls": "guardrail.errors",
    "MemoryStore": "guardrail.store",
    "MissingExtra": "guardrail.errors",
    "Policy": "guardrail.policy.models",
    "PolicyError": "guardrail.errors",
    "PolicyReloader": "guardrail.reload",
    "Reason": "guardrail.engine",
    "StaleRevision": "guardrail.errors",
    "Store": "guardrail.store",
    "StoreError": "guardrail.errors",
    "UserState": "guardrail.state",
    "create_store": "guardrail.store",
    "install": "guardrail.embed",
    "load_policy": "guardrail.policy.loading",
    "parse_guardrail_context": "guardrail.context_header",
    "parse_policy": "guardrail.policy.loading",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'guardrail' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
