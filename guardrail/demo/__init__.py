"""`guardrail demo`: a small recommendation service behind the guardrail, on the memory store."""
