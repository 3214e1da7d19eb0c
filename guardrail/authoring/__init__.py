"""Changing a policy safely: golden cases, the trace of one decision, the policy's JSON Schema
(docs/integrate.md, "Change a policy safely")."""
