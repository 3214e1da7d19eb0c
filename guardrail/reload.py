"""Live policy reload (docs/architecture.md §9): on SIGHUP, or when the file changes, re-read the policy.

A valid policy swaps in atomically (`GuardrailMiddleware.use_policy`: requests already running finish
on the policy they started with); an invalid one is refused with one JSON log line naming every
problem, and the old one keeps serving. Each attempt counts in
`guardrail_policy_reloads_total{result="success"|"error"}`; `guardrail_policy_info` names the live one.

`guardrail serve` uses it; a service embedding the middleware can too:

    reloader = PolicyReloader(middleware, "policy.yaml")  # right after the middleware loaded that file
    reloader.install_sighup()          # in the running event loop, e.g. in the app's lifespan
    reloader.start_watching()          # optional: poll the file about once a second
    ...
    reloader.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from guardrail.errors import PolicyError
from guardrail.policy.loading import parse_policy, read_policy_text
from guardrail.policy.models import Policy

if TYPE_CHECKING:
    from guardrail.middleware import GuardrailMiddleware

logger = logging.getLogger("guardrail")

# Read when the store is created: a reload cannot change them (the running store keeps its own).
_STORE_SETTINGS = ("store_timeout_ms", "decisions_per_user", "decision_retention_days")

_Signature = tuple[int, int, int] | None  # (inode, size, mtime in ns) of the file; None: cannot stat it


class PolicyReloader:
    """Reload `middleware`'s policy from `path`. `snapshot`: a file that receives a copy of each
    policy that loads, for a process that starts while `path` is broken (see `load_or_snapshot`)."""

    def __init__(
        self,
        middleware: GuardrailMiddleware,
        path: str | os.PathLike[str],
        *,
        snapshot: str | os.PathLike[str] | None = None,
        interval: float = 1.0,
    ) -> None:
        self.middleware = middleware
        self.path = Path(path)
        self.snapshot = Path(snapshot) if snapshot is not None else None
        self.interval = interval
        # What the file looks like now: the middleware has just loaded it, so only a change reloads.
        self._signature = _signature(self.path)
        self._digest = _digest_of(self.path)
        self._watching: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def reload(self) -> bool:
        """Re-read the file now; True if its policy is now the live one."""
        try:
            text = read_policy_text(self.path)
        except PolicyError as exc:
            self._digest = None
            return self._refuse(exc)
        return self._apply(text)

    def poll(self) -> bool | None:
        """Reload if the file's content changed since it was last read; None if it did not."""
        signature = _signature(self.path)
        if signature == self._signature:
            return None
        self._signature = signature
        try:
            text = read_policy_text(self.path)
        except PolicyError as exc:
            if self._digest is None:
                return None  # unreadable before too: said once already
            self._digest = None
            return self._refuse(exc)
        if _digest(text) == self._digest:
            return None  # touched, or written again with the same content
        return self._apply(text)

    # -- running it ---------------------------------------------------------------------------

    def install_sighup(self) -> None:
        """Reload on SIGHUP. Call it in the running event loop (the main thread's, as Unix signals are)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGHUP, self.reload)

    def start_watching(self) -> None:
        """Poll the file every `interval` seconds (its inode, size and mtime; the content's hash when
        those change) and reload when its content changes. Call it in the running event loop."""
        if self._watching is None:
            self._watching = asyncio.get_running_loop().create_task(self._watch(), name="guardrail policy watch")

    def close(self) -> None:
        """Stop watching and stop handling SIGHUP."""
        if self._watching is not None:
            self._watching.cancel()
            self._watching = None
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._loop.remove_signal_handler(signal.SIGHUP)
            self._loop = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.poll()

    # -- what a reload does -------------------------------------------------------------------

    def _apply(self, text: str) -> bool:
        self._digest = _digest(text)
        try:
            policy = parse_policy(text, source=str(self.path))
        except PolicyError as exc:
            return self._refuse(exc)
        adopt(self.middleware, policy, file=str(self.path))
        if self.snapshot is not None:
            _keep(self.snapshot, text)
        return True

    def _refuse(self, error: PolicyError) -> bool:
        refuse(self.middleware, error, file=str(self.path))
        return False


def adopt(middleware: GuardrailMiddleware, policy: Policy, **where: str) -> None:
    """Make `policy` the live one (swapped atomically: running requests finish on theirs), counted in
    `guardrail_policy_reloads_total` and logged; say which store settings wait for the next start.
    `where`: what the log adds (the file it came from)."""
    previous = middleware.policy
    middleware.use_policy(policy)
    middleware.runtime.metrics.policy_reloads.labels("success").inc()
    logger.info(
        "policy reloaded: %s is live (was %s)",
        policy.policy_id,
        previous.policy_id,
        extra={"policy": policy.policy_id, "previous": previous.policy_id, **where},
    )
    changed = [name for name in _STORE_SETTINGS if getattr(policy, name) != getattr(previous, name)]
    if changed:
        logger.warning(
            "the store keeps its settings until the next start: %s changed",
            ", ".join(changed),
            extra={"policy": policy.policy_id, **where},
        )


def refuse(middleware: GuardrailMiddleware, error: PolicyError, **where: str) -> None:
    """A policy that does not load: the live one keeps serving; counted and logged with every problem."""
    live = middleware.policy.policy_id
    # Logged, then counted: a refusal the metric shows has its log line.
    logger.error(
        "policy reload refused, %s is still live: %s",
        live,
        error.report(),
        extra={
            "policy": live,
            **where,
            "problems": [f"{path or '(top)'}: {message}" for path, message in error.issues],
        },
    )
    middleware.runtime.metrics.policy_reloads.labels("error").inc()


def load_or_snapshot(path: str | os.PathLike[str], snapshot: str | os.PathLike[str] | None) -> Policy:
    """The policy in `path`; if it is broken and a `snapshot` of the last live policy exists, that one
    (logged): a worker process that restarts after a refused reload serves what the others serve."""
    try:
        return parse_policy(read_policy_text(path), source=str(path))
    except PolicyError as exc:
        if snapshot is None or not Path(snapshot).exists():
            raise
        policy = parse_policy(read_policy_text(snapshot), source=str(snapshot))
        logger.error(
            "the policy file is refused, serving the last live policy %s: %s",
            policy.policy_id,
            exc.report(),
            extra={"policy": policy.policy_id, "file": str(path)},
        )
        return policy


def _keep(snapshot: Path, text: str) -> None:
    # Written aside and renamed: a process starting meanwhile reads the old copy or the new, whole.
    partial = snapshot.with_name(f"{snapshot.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(snapshot)
    except OSError as exc:
        logger.warning("cannot keep a copy of the live policy in %s: %s", snapshot, exc)


def _signature(path: Path) -> _Signature:
    try:
        # stat, not lstat: a Kubernetes ConfigMap volume swaps a `..data` symlink, so the file the path
        # resolves to changes while the link at the path stays as it was.
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _digest_of(path: Path) -> bytes | None:
    try:
        return _digest(read_policy_text(path))
    except PolicyError:
        return None
