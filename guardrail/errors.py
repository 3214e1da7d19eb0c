"""Exceptions raised by guardrail.

GuardrailError
 ├── PolicyError          a policy file is invalid: carries every (key path, message) found
 ├── MissingExtra         a feature is used whose optional dependencies are not installed
 ├── StoreError           the store could not answer (down, slow, refused); callers apply fail_mode
 └── ControlsError        a request to change controls cannot be applied
      ├── InvalidControls   the patch names an unknown key or a bad value (HTTP 422)
      └── StaleRevision     If-Match does not match the current revision (HTTP 412)
"""

from __future__ import annotations

from collections.abc import Sequence


class GuardrailError(Exception):
    pass


class PolicyError(GuardrailError):
    def __init__(self, source: str, issues: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.issues = list(issues)
        super().__init__(self.report())

    def report(self) -> str:
        count = len(self.issues)
        lines = [f"{self.source}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  {path or '(top)'}: {message}" for path, message in self.issues]
        return "\n".join(lines)


class MissingExtra(GuardrailError):
    def __init__(self, message: str, *, extra: str) -> None:
        self.extra = extra
        super().__init__(message)


class StoreError(GuardrailError):
    pass


class ControlsError(GuardrailError):
    pass


class InvalidControls(ControlsError):
    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{field}: {message}" for field, message in self.problems))


class StaleRevision(ControlsError):
    def __init__(self, current: int) -> None:
        self.current = current
        super().__init__(f"the controls changed since you read them; the current revision is {current}")
