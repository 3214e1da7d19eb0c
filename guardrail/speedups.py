"""The C extension (guardrail/_speedups.c) when it is built: the per-item loop and the digit-run scan.

Without a C compiler the install goes on without it, and the Python versions (the references the C code
is tested against) do the same work, slower. `GUARDRAIL_PURE_PYTHON=1` rules it out, to compare or debug.
"""

from __future__ import annotations

import os
from types import ModuleType

native: ModuleType | None
try:
    from guardrail import _speedups as native
except ImportError:
    native = None
if os.environ.get("GUARDRAIL_PURE_PYTHON"):
    native = None
# Whether the C loop runs (said at start, and in guardrail_build_info).
ACCELERATED = native is not None
