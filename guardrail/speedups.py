"""The C extension (guardrail/_speedups.c) when it is built: the per-item loop and the digit-run scan.

Without a C compiler the install goes on without it, and the Python versions (the references the C code
is tested against) do the same work, slower. `GUARDRAIL_PURE_PYTHON=1` rules it out, to compare or debug.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

# What pydantic takes for true in a bool setting (guardrail.settings), in lower case.
TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
native: ModuleType | None
try:
    # By name: a compiled module imports nothing of guardrail, and the import tree (.importlinter),
    # read from the sources, would take `from guardrail import _speedups` for an import of the package.
    native = importlib.import_module("guardrail._speedups")
except ImportError:
    native = None
# Read here, not through guardrail.settings: the engine imports this module, and loads no pydantic (the
# import tree). The spellings of true are pydantic's, so that `Settings.pure_python` reads it alike.
if os.environ.get("GUARDRAIL_PURE_PYTHON", "").strip().lower() in TRUE:
    native = None
# Whether the C loop runs (said at start, and in guardrail_build_info).
ACCELERATED = native is not None
