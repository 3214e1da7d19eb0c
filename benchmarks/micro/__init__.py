"""In-process micro-benchmarks (pytest-benchmark): the parts of a guarded response, one at a time.

    python -m pytest benchmarks/micro --benchmark-only --benchmark-json=.benchmarks/micro.json

Not collected by the normal test run (pyproject's testpaths is tests/). With --benchmark-json,
benchmarks/results/micro.md is written too (the JSON, tens of MB of raw timings, stays in the
git-ignored .benchmarks/).
"""
