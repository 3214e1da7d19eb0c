"""Recording cases for `guardrail diff` from live traffic (docs/integrate.md, "Record cases").

A sampled guarded response (`guardrail.sampling`) becomes one line of CASES.jsonl, as
`guardrail.authoring.diff` reads it: the user's controls as `GET /v1/controls` shows them without
`user`, `revision` and `updated_at` (or `"anonymous": true`), what the request said, the route and the
upstream's body as it came. Never a user id: every string of the body equal to the caller's id is
written `"<user>"`.

Lines are buffered and written when the queue is empty (or the buffer is large), each write whole
lines to a file opened with O_APPEND: worker processes of `guardrail serve` share one file, and a line
never interleaves with another's.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from guardrail.bodies import BadBody, read_json, write_json
from guardrail.candidate import check_rate
from guardrail.sampling import Sampled

USER_PLACEHOLDER = "<user>"
# Written out once this much is buffered, even while the queue is busy.
FLUSH_BYTES = 64 * 1024
_READ_ONLY = ("user", "revision", "updated_at")


def open_cases(path: str | os.PathLike[str]) -> int:
    """A file descriptor appending to `path` (made if missing); `OSError` says why it cannot be."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


class CaseRecorder:
    """Writes sampled responses as cases for `guardrail diff`."""

    def __init__(self, path: str | os.PathLike[str], rate: float) -> None:
        self.rate = check_rate("record_rate", rate)
        self.path = path
        self._fd: int | None = open_cases(path)
        self._buffer: list[bytes] = []
        self._buffered = 0

    def take(self, sampled: Sampled) -> None:
        try:
            document, exact = read_json(sampled.body)
        except BadBody:
            return
        user = sampled.user
        asked = sampled.asked
        now = datetime.fromtimestamp(sampled.at, UTC)
        case: dict[str, Any] = {}
        if user is None or asked.state is None:
            case["anonymous"] = True
        else:
            shown = asked.state.to_json(user, now)
            case["controls"] = {key: value for key, value in shown.items() if key not in _READ_ONLY}
            if asked.degraded:
                case["store"] = "down"
        case["request"] = {
            "gpc": asked.gpc,
            "age": asked.age,
            "tc_string": asked.tc_string,
            "accept_language": asked.accept_language.decode("latin-1") if asked.accept_language else None,
            "now": now.isoformat(),
        }
        case["route"] = sampled.route
        try:
            case["body"] = without_user(document, user) if user is not None else document
        except RecursionError:
            return  # deeper than Python's stack allows: not a page anyone's policy is tested on
        line = write_json(case, exact=exact) + b"\n"
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        if self._fd is None:  # closed at a shutdown, and the app started again
            self._fd = open_cases(self.path)
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        written = os.write(self._fd, data)
        while written < len(data):  # a regular file takes it all, or raises (a full disk)
            data = data[written:]
            written = os.write(self._fd, data)

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def without_user(document: Any, user: str) -> Any:
    """`document` with every string (value or key) equal to `user` replaced by `"<user>"`."""
    if type(document) is str:
        return USER_PLACEHOLDER if document == user else document
    if type(document) is list:
        return [without_user(value, user) for value in document]
    if type(document) is dict:
        return {
            (USER_PLACEHOLDER if key == user else key): without_user(value, user) for key, value in document.items()
        }
    return document
