"""JSON logs: one line per guarded request, for machines to read (issue 5).

What is logged is bounded and safe to ship: the route template (never the raw path), the outcome, the
hidden count, the duration and the decision id. The user appears only as a keyed hash (HMAC-SHA256
with `GUARDRAIL_LOG_KEY`, else a per-process key), so logs can be correlated per user without naming
anyone; TC strings, cookies and headers are never logged. A line written while an OpenTelemetry span
is current carries its `trace_id` and `span_id` (the guardrail's own span, or the application's).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sys
import time
from typing import Any

_PROCESS_KEY = secrets.token_bytes(32)
# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
# (uvicorn adds `color_message`: the message with terminal colours, for its own console format.)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


def log_key() -> bytes:
    """The key of the user hash: `GUARDRAIL_LOG_KEY`, else this process's own."""
    from guardrail.settings import Settings

    configured = Settings.load().log_key
    return configured.get_secret_value().encode() if configured is not None else _PROCESS_KEY


def user_hash(user: str, key: bytes | None = None) -> str:
    """The user, as log lines name them: keyed with `key`, else `log_key()` (read now: pass it when hashing often)."""
    return hmac.new(log_key() if key is None else key, user.encode(), hashlib.sha256).hexdigest()[:16]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # which worker, with `guardrail serve --workers N`
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in record.__dict__.items() if key not in _STANDARD)
        trace = sys.modules.get("opentelemetry.trace")
        if trace is not None:  # looked up, never imported: without it there is no span
            _add_trace_ids(entry, trace)
        if record.exc_info:
            # The exception's type and message only: a stack trace is for a debugger, not a log line.
            entry["error"] = f"{record.exc_info[0].__name__ if record.exc_info[0] else 'Error'}: {record.exc_info[1]}"
        # ASCII only: a value that came from outside (an upstream's detail, an exception's text)
        # cannot put a control or right-to-left character into a terminal or a log viewer.
        return json.dumps(entry, default=str, ensure_ascii=True)


def _add_trace_ids(entry: dict[str, Any], trace: Any) -> None:
    # Formatted as the W3C traceparent writes them, and as trace viewers search for them.
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        entry["trace_id"] = format(context.trace_id, "032x")
        entry["span_id"] = format(context.span_id, "016x")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record comes (servers and tests may replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str | int | None = None) -> None:
    """JSON lines on stderr at `level`, else `GUARDRAIL_LOG_LEVEL`, else info."""
    if not level:
        from guardrail.settings import Settings

        level = Settings.load().log_level or "info"
    chosen = level
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("guardrail")
    root.handlers[:] = [handler]
    root.setLevel(chosen.upper() if isinstance(chosen, str) else chosen)
    root.propagate = False
