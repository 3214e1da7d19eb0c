"""The guardrail's peers in the benchmark: the same rules written the naive way, and in Rego."""
