"""The app and client the web tests share: the middleware on the test policy, called from 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from tests.conftest import ClientFactory, make_policy
from tests.upstream import Upstream


@pytest.fixture
def app() -> GuardrailMiddleware:
    return GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry())


@pytest.fixture
def client(app: GuardrailMiddleware, client_for: ClientFactory) -> httpx.AsyncClient:
    return client_for(app)
