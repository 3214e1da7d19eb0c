"""Fixtures for the attack tests: the sidecar served in process in front of a recording upstream
(`start_sidecar`, `upstream`), the same fixtures as tests/sidecar uses."""

from tests.sidecar.conftest import start_sidecar, upstream, upstream_server

__all__ = ["start_sidecar", "upstream", "upstream_server"]
