"""Redis Cluster needs redis-py 8.0 or newer: older asyncio cluster clients cannot subscribe to
`gr:invalidate`, so a replica would never hear of another's change. The floor leg of .ci/run (redis-py
at pyproject.toml's lowest) runs this on an older client; the locked legs on the newest."""

from __future__ import annotations

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from guardrail import GuardrailError, create_store


def test_a_cluster_store_needs_redis_py_8_and_says_how_to_get_it() -> None:
    if hasattr(RedisCluster, "pubsub"):
        assert int(redis.__version__.split(".")[0]) >= 8  # the boundary the error message names
        return
    with pytest.raises(GuardrailError, match=r"needs redis-py 8\.0 or newer .* pip install 'redis\[hiredis\]>=8'"):
        create_store("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
