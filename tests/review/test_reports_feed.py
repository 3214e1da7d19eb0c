"""Users' reports (`POST /guardrail/v1/reports`, issue 18) reach the review queue: one `reported_item` entry
per item, counted per reason, without who reported it (docs/review.md), on memory and on Redis."""

from __future__ import annotations

import orjson

from tests.review.conftest import REVIEWER, Service, as_user


async def report(service: Service, user: str, reason: str) -> int:
    """`user` gets recommendations, then reports item m1 of that decision; the report's status."""
    page = await service.client.get("/recommendations", headers=as_user(user))
    assert page.status_code == 200, page.text
    flush = getattr(service.store, "flush", None)
    if flush is not None:
        await flush()  # the decision record is written after the response
    response = await service.client.post(
        "/guardrail/v1/reports",
        headers={**as_user(user), "content-type": "application/json"},
        content=orjson.dumps({"decision": page.headers["guardrail-decision"], "item": "m1", "reason": reason}),
    )
    return response.status_code


async def test_reports_show_up_in_the_queue_by_reason_and_never_by_reporter(service: Service) -> None:
    assert await report(service, "alice-7f3", "offensive") == 201
    assert await report(service, "bob-91c", "offensive") == 201
    assert await report(service, "carol-2d8", "wrong_topic") == 201
    queue = await service.queue()
    assert queue.status_code == 200, queue.text
    reported = [e for e in queue.json()["entries"] if e["kind"] == "reported_item"]
    assert len(reported) == 1
    entry = reported[0]
    assert entry["item"] == "m1"
    assert entry["count"] == 3
    assert entry["reasons"] == {"offensive": 2, "wrong_topic": 1}
    assert entry["routes"] == ["/recommendations"]
    for reporter in ("alice-7f3", "bob-91c", "carol-2d8"):
        assert reporter not in queue.text
    # The same user on a later decision reports anew, and the entry counts it.
    assert await report(service, "alice-7f3", "other") == 201
    entry = await service.entry("reported_item", "m1")
    assert entry["count"] == 4 and entry["reasons"] == {"offensive": 2, "wrong_topic": 1, "other": 1}


async def test_a_repeated_report_of_one_decision_is_counted_once(service: Service) -> None:
    page = await service.client.get("/recommendations", headers=as_user("dave-55"))
    flush = getattr(service.store, "flush", None)
    if flush is not None:
        await flush()
    body = {"decision": page.headers["guardrail-decision"], "item": "m1", "reason": "not_for_me"}
    statuses = []
    for _ in range(2):
        response = await service.client.post(
            "/guardrail/v1/reports",
            headers={**as_user("dave-55"), "content-type": "application/json"},
            content=orjson.dumps(body),
        )
        statuses.append(response.status_code)
    assert statuses == [201, 200]
    entry = await service.entry("reported_item", "m1")
    assert entry["count"] == 1 and entry["reasons"] == {"not_for_me": 1}
    # Not a reviewer: the queue is not there.
    assert (await service.queue(user="dave-55")).status_code == 404
    assert (await service.queue(user=REVIEWER)).status_code == 200
