"""In-process micro-benchmarks (pytest-benchmark): the parts of a guarded response, one at a time.

    python -m pytest benchmarks/micro --benchmark-only --benchmark-json=benchmarks/results/micro.json

Not collected by the normal test run (pyproject's testpaths is tests/). With --benchmark-json,
benchmarks/results/micro.md is written too.
"""
