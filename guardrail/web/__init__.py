"""The guardrail's own HTTP surfaces: the management router (`guardrail.web.router`) and `/metrics`."""

from guardrail.web.exposition import metrics_app

__all__ = ["metrics_app"]
