"""The sidecar forwards `Guardrail-Context` to a real upstream over HTTP: the demo recommendation service, served
by uvicorn behind `guardrail serve`'s app, honours it and its pages come back full (docs/integrate.md
#honouring-it-in-your-recommender). What the sidecar sends, byte for byte, is in tests/attacks/test_context_header.py.
"""

from __future__ import annotations

import httpx
import orjson
from prometheus_client import CollectorRegistry

from guardrail.demo.app import demo_policy_path
from guardrail.demo.service import service
from guardrail.sidecar import build_sidecar
from tests.sidecar.servers import serving

MUTED = ("movies", "music", "travel")


async def test_a_user_with_three_muted_topics_gets_a_full_page_through_the_sidecar() -> None:
    async with serving(service()) as upstream_url:
        sidecar = build_sidecar(demo_policy_path(), upstream_url, store="memory://", registry=CollectorRegistry())
        async with serving(sidecar) as url, httpx.AsyncClient(base_url=url) as client:
            controls = {"consent": {"personalization": "granted"}, "muted": {topic: {"until": None} for topic in MUTED}}
            response = await client.patch(
                "/guardrail/v1/controls",
                content=orjson.dumps(controls),
                headers={"x-user-id": "ben", "content-type": "application/merge-patch+json"},
            )
            assert response.status_code == 200, response.text

            honoured = (await client.get("/recommendations?count=24", headers={"x-user-id": "ben"})).json()
            assert len(honoured["items"]) == 24
            assert honoured["guardrail"]["hidden"] == 0
            muted = [
                item["id"]
                for item in honoured["items"]
                if any(category.split(".")[0] in MUTED for category in item["categories"])
            ]
            assert muted == []

            ignored = (
                await client.get("/recommendations?count=24&context=ignore", headers={"x-user-id": "ben"})
            ).json()
            assert len(ignored["items"]) == 24 - ignored["guardrail"]["hidden"] < 24

            # Not personalized: the sidecar sends the request to the popular list, which uses nothing personal.
            anonymous = (await client.get("/recommendations")).json()
            assert anonymous["items"]
            assert all(item["signals"] == [] for item in anonymous["items"])
