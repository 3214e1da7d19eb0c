"""Optional dependencies: each feature beyond the middleware comes with an extra (docs/install.md),
and using the feature without it fails at start, naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from guardrail.errors import MissingExtra

DISTRIBUTION = "personalization-guardrail"

# The modules each extra brings, as imported (not as distributions).
EXTRAS: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "sidecar": ("uvicorn", "httptools", "certifi"),
    "jwt": ("jwt", "cryptography"),
    "otel": ("opentelemetry.trace", "opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http"),
}


def require(extra: str, *, feature: str) -> None:
    """Import every module of `extra`, or raise MissingExtra naming the extra and the feature."""
    for module in EXTRAS[extra]:
        load(module, extra=extra, feature=feature)


def load(module: str, *, extra: str, feature: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{feature} needs the `{extra}` extra, which is not installed (no module {exc.name or module!r}): "
            f"pip install '{DISTRIBUTION}[{extra}]'",
            extra=extra,
        ) from None
