"""The trace tests' fixtures (tests/tracing/memory.py)."""

from tests.tracing.memory import spans

__all__ = ["spans"]
