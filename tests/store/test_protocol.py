"""The store protocol is narrow: every type its signatures name is exported from `guardrail.store`, a
backend is given its metrics when it is made, and other parts ask it (never reach into it)."""

from __future__ import annotations

import ast
import builtins
import inspect
import sys
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

import guardrail.store
from guardrail.metrics import Metrics
from guardrail.store import MemoryStore, Store, create_store
from guardrail.store import base as protocol_module
from tests.store.redis_servers import RedisServer


def annotation_names(annotation: str) -> set[str]:
    """The names an annotation (a string, under `from __future__ import annotations`) is made of."""
    return {node.id for node in ast.walk(ast.parse(annotation, mode="eval")) if isinstance(node, ast.Name)}


def is_standard_library(value: object) -> bool:
    module = getattr(value, "__module__", None) or ""
    return module.partition(".")[0] in sys.stdlib_module_names


def protocol_methods() -> list[tuple[str, Callable[..., object]]]:
    return [
        (name, member)
        for name, member in vars(Store).items()
        if inspect.isfunction(member) and not name.startswith("_")
    ]


def test_the_protocol_has_its_methods() -> None:
    assert {name for name, _ in protocol_methods()} == {
        "load",
        "patch",
        "erase",
        "record",
        "decisions",
        "decision",
        "add_report",
        "reports",
        "last_known",
        "rate_limit_storage",
        "review_queue",
        "check",
        "aclose",
    }


def test_every_type_in_the_protocol_is_exported() -> None:
    exported = set(guardrail.store.__all__)
    for method, function in protocol_methods():
        for parameter, annotation in function.__annotations__.items():
            for name in annotation_names(annotation):
                if name in exported:
                    # The exported name is the very type the protocol means.
                    meant = vars(protocol_module).get(name) or getattr(guardrail.store, name)
                    assert getattr(guardrail.store, name) is meant, f"{method}({parameter}): {name}"
                    continue
                if hasattr(builtins, name):
                    continue
                value = vars(protocol_module).get(name)
                assert value is not None and is_standard_library(value), (
                    f"Store.{method} names {name!r} ({parameter}), which guardrail.store does not export"
                )


def test_the_rate_limit_storage_type_is_the_limits_one() -> None:
    from limits.aio.storage import Storage

    assert guardrail.store.RateLimitStorage is Storage


def test_memory_counts_the_rate_limit_in_process() -> None:
    store = create_store("memory://", metrics=Metrics(CollectorRegistry()))
    assert isinstance(store, MemoryStore)
    assert isinstance(store, Store)
    assert store.rate_limit_storage() is None


async def test_redis_hands_out_a_storage_on_its_own_pool(redis_server: RedisServer) -> None:
    from limits.aio.storage import Storage

    registry = CollectorRegistry()
    store = create_store(redis_server.url, metrics=Metrics(registry), timeout=1.0)
    try:
        assert isinstance(store, Store)
        storage = store.rate_limit_storage()
        assert isinstance(storage, Storage)
        assert store.rate_limit_storage() is storage
        assert await storage.check()
        await store.load("protocol-user")  # counted into the metrics it was made with
        lookups = [
            registry.get_sample_value("guardrail_cache_lookups_total", {"result": result}) or 0
            for result in ("hit", "miss", "coalesced", "bypass")
        ]
        assert sum(lookups) == 1
    finally:
        await store.aclose()


def test_unknown_names_are_not_exported() -> None:
    with pytest.raises(AttributeError):
        guardrail.store.NotAType  # noqa: B018
