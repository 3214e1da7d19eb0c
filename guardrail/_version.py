"""The version of guardrail, written once: the package build reads it (pyproject.toml), and so does the code."""

__version__ = "0.2.0"
