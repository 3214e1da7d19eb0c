"""What a checked page says about itself: the `guardrail` summary and the `Guardrail-*` headers
(docs/integrate.md, "What comes back").

One source for both ways of checking a page: the responder (the middleware's buffered JSON) and
`InProcess.check` (items the service holds as Python objects) write exactly these.
"""

from __future__ import annotations

from typing import Any

from guardrail.representation import PRIVATE

_PRIVATE = PRIVATE[1].decode()


def summary(
    decision: str, mode: str, policy: str, kept: int, hidden: int, degraded: bool, notice: str | None
) -> dict[str, Any]:
    """The `guardrail` object of an annotated response."""
    return {
        "decision": decision,
        "mode": mode,
        "policy": policy,
        "kept": kept,
        "hidden": hidden,
        "degraded": degraded,
        "notice": notice,
    }


def decision_headers(decision: str, mode: str, hidden: int, degraded: bool) -> list[tuple[bytes, bytes]]:
    """`Guardrail-Decision`, `Guardrail-Mode`, `Guardrail-Hidden`, and `Guardrail-Degraded: 1` when a
    fail mode applied, as ASGI header pairs."""
    headers = [
        (b"guardrail-decision", decision.encode()),
        (b"guardrail-mode", mode.encode()),
        (b"guardrail-hidden", str(hidden).encode()),
    ]
    if degraded:
        headers.append((b"guardrail-degraded", b"1"))
    return headers


def header_map(decision: str, mode: str, hidden: int, degraded: bool) -> dict[str, str]:
    """The same headers as `decision_headers`, spelled for a Starlette response (in-process checks),
    and `Cache-Control: private, no-store` in enforce mode, as the middleware sends an enforced page."""
    headers = {"Guardrail-Decision": decision, "Guardrail-Mode": mode, "Guardrail-Hidden": str(hidden)}
    if degraded:
        headers["Guardrail-Degraded"] = "1"
    if mode == "enforce":
        headers["Cache-Control"] = _PRIVATE
    return headers
