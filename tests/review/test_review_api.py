"""The review API end to end (docs/review.md), on memory and Redis: unknown categories reach the queue, a
reviewer decides, and the decision changes what users see at once; anyone else finds nothing there."""

from __future__ import annotations

import pytest

from guardrail.review import Sighting, entry_id
from tests.conftest import ClientFactory, make_policy
from tests.review.conftest import REVIEWER, Service, as_user, middleware, review_policy

REVIEW_PATHS = ["/guardrail/v1/review/queue", "/guardrail/v1/review/audit", "/guardrail/v1/review/0123456789abcdef"]


async def test_unknown_categories_reach_the_queue_aggregated(service: Service) -> None:
    for _ in range(3):
        await service.shown()
    entry = await service.entry("unknown_category", "sportsbook")
    assert entry["id"] == entry_id("unknown_category", "sportsbook")
    assert entry["count"] == 6  # u1 and u2 (spelled " Sportsbook"), three pages
    assert entry["examples"] == ["u1", "u2"]
    assert entry["route"] == "/recommendations" and entry["routes"] == ["/recommendations"]
    assert entry["first_seen"] <= entry["last_seen"]
    # Scored over review.invasiveness_at, nothing here: these items rely on no personal data.
    assert not [e for e in (await service.queue()).json()["entries"] if e["kind"] == "flagged_item"]


@pytest.mark.parametrize("path", REVIEW_PATHS)
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("who", [{"x-user-id": "alice"}, {}])
async def test_anyone_but_a_reviewer_finds_nothing_there(
    service: Service, path: str, method: str, who: dict[str, str]
) -> None:
    absent = await service.client.request(method, "/guardrail/v1/nothing-here", headers=who)
    response = await service.client.request(method, path, headers=who, content=b"{}")
    assert response.status_code == 404
    assert response.headers["content-type"] == absent.headers["content-type"]
    # The same answer, word for word, as for a path nobody serves.
    assert response.json() == {
        **absent.json(),
        "detail": absent.json()["detail"].replace("/guardrail/v1/nothing-here", path),
    }


async def test_a_policy_without_reviewers_has_no_review_api(client_for: ClientFactory) -> None:
    client = client_for(middleware("memory://", make_policy()))
    response = await client.get("/guardrail/v1/review/queue", headers=as_user(REVIEWER))
    assert response.status_code == 404


async def test_an_alias_makes_an_unknown_category_a_known_one(service: Service) -> None:
    await service.shown()
    entry = await service.entry("unknown_category", "sportsbook")
    response = await service.decide(entry["id"], {"decision": "label", "alias_of": "gambling", "note": "a bookmaker"})
    assert response.status_code == 200, response.text
    decided = response.json()
    assert decided["category"] == "sportsbook" and decided["decision"]["details"]["alias_of"] == "gambling"
    # Gone from the queue; and a user who muted gambling no longer sees sportsbook items.
    assert entry["id"] not in {e["id"] for e in (await service.queue()).json()["entries"]}
    patched = await service.client.patch(
        "/guardrail/v1/controls",
        headers={**as_user("alice"), "content-type": "application/merge-patch+json"},
        content=b'{"muted": {"gambling": {"until": null}}}',
    )
    assert patched.status_code == 200
    assert await service.shown("alice") == ["m1", "x1"]


async def test_a_new_category_can_be_muted_by_users(service: Service) -> None:
    await service.shown()
    entry = await service.entry("unknown_category", "crypto")
    body = {"decision": "label", "sensitive": False, "label": {"en": "crypto", "ko": "암호화폐"}, "note": "new topic"}
    assert (await service.decide(entry["id"], body)).status_code == 200
    patched = await service.client.patch(
        "/guardrail/v1/controls",
        headers={**as_user("bob"), "content-type": "application/merge-patch+json"},
        content=b'{"muted": {"crypto": {"until": null}}}',
    )
    assert patched.status_code == 200, patched.text  # before the decision, an unknown category: 422
    assert "x1" not in await service.shown("bob")


async def test_a_blocked_item_is_hidden_for_everyone_until_a_later_decision(service: Service) -> None:
    queue = service.store.review_queue()
    queue.note_report("/recommendations", "m1", "offensive", "A film")
    entry = await service.entry("reported_item", "m1")
    assert entry["reasons"] == {"offensive": 1} and entry["title"] == "A film"
    assert (await service.decide(entry["id"], {"decision": "block", "note": "checked: abusive"})).status_code == 200
    page = await service.client.get("/recommendations", headers=as_user("carol"))
    assert "m1" not in [i["id"] for i in page.json()["items"]]
    assert page.headers["guardrail-hidden"] == "1"
    assert "checked it and blocked it" in page.json()["guardrail"]["notice"]
    anonymous = await service.client.get("/recommendations")
    assert "m1" not in [i["id"] for i in anonymous.json()["items"]]
    # The receipt names the reviewer's decision as the reason.
    await service.store.review_queue().flush()
    flush = getattr(service.store, "flush", None)
    if flush is not None:
        await flush()
    receipt = await service.client.get(
        f"/guardrail/v1/decisions/{page.headers['guardrail-decision']}", headers=as_user("carol")
    )
    blocked = [i for i in receipt.json()["items"] if i["id"] == "m1"]
    assert blocked[0]["reasons"] == ["blocked_by_review"]
    # Undone by a later decision on the same entry.
    assert (await service.decide(entry["id"], {"decision": "dismiss", "note": "appeal upheld"})).status_code == 200
    assert "m1" in await service.shown("carol")
    assert [a["decision"] for a in await service.audit() if a["entry"] == entry["id"]] == ["block", "dismiss"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"decision": "dismiss"}, "note"),
        ({"decision": "dismiss", "note": "   "}, "note"),
        ({"decision": "label", "alias_of": "nowhere", "note": "n"}, "alias_of"),
        ({"decision": "label", "sensitive": True, "label": {"en": "bets"}, "note": "n"}, "label"),
        ({"decision": "label", "label": {"en": "bets", "ko": "베팅"}, "note": "n"}, "sensitive"),
        ({"decision": "block", "note": "a category is not an item"}, "decision"),
        ({"decision": "delete", "note": "n"}, "decision"),
    ],
)
async def test_a_decision_that_cannot_be_made_is_422_naming_the_field(
    service: Service, body: dict[str, object], field: str
) -> None:
    await service.shown()
    entry = await service.entry("unknown_category", "sportsbook")
    response = await service.decide(entry["id"], body)
    assert response.status_code == 422, response.text
    assert field in {error["field"] for error in response.json()["errors"]}
    assert await service.audit() == []  # nothing was decided


async def test_an_unknown_entry_is_404_for_a_reviewer(service: Service) -> None:
    response = await service.decide("0123456789abcdef", {"decision": "dismiss", "note": "n"})
    assert response.status_code == 404


async def test_the_audit_names_who_when_what_and_why_and_no_api_changes_it(service: Service) -> None:
    await service.shown()
    entry = await service.entry("unknown_category", "sportsbook")
    await service.decide(entry["id"], {"decision": "label", "alias_of": "gambling", "note": "a bookmaker"})
    await service.decide(entry["id"], {"decision": "dismiss", "note": "on second thought"})
    before = await service.audit()
    assert [(a["reviewer"], a["entry"], a["kind"], a["decision"], a["note"]) for a in before] == [
        (REVIEWER, entry["id"], "unknown_category", "label", "a bookmaker"),
        (REVIEWER, entry["id"], "unknown_category", "dismiss", "on second thought"),
    ]
    assert before[0]["details"] == {"category": "sportsbook", "alias_of": "gambling"}
    assert before[0]["at"] <= before[1]["at"]
    # Every method on every review path, as a reviewer: nothing rewrites or removes an audit entry.
    for path in [*REVIEW_PATHS, "/guardrail/v1/review/audit/0", f"/guardrail/v1/review/{entry['id']}"]:
        for method in ("PUT", "PATCH", "DELETE"):
            response = await service.client.request(
                method, path, headers={**as_user(REVIEWER), "content-type": "application/json"}, content=b"{}"
            )
            assert response.status_code in (404, 405), (method, path, response.status_code)
    await service.client.post(
        "/guardrail/v1/review/audit", headers={**as_user(REVIEWER), "content-type": "application/json"}, content=b"[]"
    )
    await service.client.delete("/guardrail/v1/controls", headers=as_user(REVIEWER))  # erasing one's own data
    assert await service.audit() == before


async def test_a_spelling_that_cannot_be_a_category_id_can_still_be_an_alias(service: Service) -> None:
    service.store.review_queue().note(Sighting("unknown_category", "sports betting", "/recommendations", "b1", 0.0))
    entry = await service.entry("unknown_category", "sports betting")
    body = {"decision": "label", "sensitive": True, "label": {"en": "betting", "ko": "베팅"}, "note": "n"}
    refused = await service.decide(entry["id"], body)
    assert refused.status_code == 422 and "make it an alias" in refused.text
    aliased = await service.decide(entry["id"], {"decision": "label", "alias_of": "gambling", "note": "bets"})
    assert aliased.status_code == 200
    # The overlay, merged into a policy file, loads: the alias is written as categories are matched.
    fragment = service.store.review_queue().overlay.fragment()
    assert fragment == {"category_aliases": {"sports betting": "gambling"}}
    assert review_policy(**fragment).category_aliases == {"sports betting": "gambling"}
