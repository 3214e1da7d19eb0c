"""Each kept item's "why am I seeing this?" (docs/api.md, "Why am I seeing this?"): the `why` link in its
explanation, the page it opens, its JSON twin with `actions`, and the page's one-click forms."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.web.csrf import CsrfTokens
from guardrail.why_links import segment
from tests.conftest import ClientFactory, make_policy
from tests.upstream import DEFAULT_ITEMS, Upstream, item

FORM = {"content-type": "application/x-www-form-urlencoded"}
MERGE = {"content-type": "application/merge-patch+json"}


def as_user(user: str = "alice", **headers: str) -> dict[str, str]:
    return {"x-user-id": user, **headers}


def token_from(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def make_app(items: list[dict[str, Any]] | None = None, **policy: Any) -> GuardrailMiddleware:
    upstream = Upstream(body={"items": items if items is not None else DEFAULT_ITEMS})
    return GuardrailMiddleware(upstream, policy=make_policy(**policy), registry=CollectorRegistry())


@pytest.fixture
def client(client_for: ClientFactory) -> httpx.AsyncClient:
    return client_for(make_app())


async def consent(client: httpx.AsyncClient, user: str = "alice", **more: Any) -> None:
    body = {"consent": {"personalization": "granted"}, **more}
    response = await client.patch(
        "/guardrail/v1/controls", headers={**as_user(user), **MERGE}, content=orjson.dumps(body)
    )
    assert response.status_code == 200, response.text


async def recommend(client: httpx.AsyncClient, user: str = "alice", **headers: str) -> dict[str, Any]:
    response = await client.get("/recommendations", headers=as_user(user, **headers))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def kept(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in body["items"]}


# -- the link ----------------------------------------------------------------------------------


async def test_every_kept_item_links_to_its_own_why_page(client: httpx.AsyncClient) -> None:
    await consent(client)
    body = await recommend(client)
    decision = body["guardrail"]["decision"]
    items = kept(body)
    assert set(items) == {"m1", "m2", "s1", "p1"}
    for item_id, entry in items.items():
        assert entry["explanation"]["why"] == f"/guardrail/why/{decision}/{item_id}"
    # The rest of the explanation is as before.
    assert items["m1"]["explanation"]["text"] == "You see this because of what you watched."
    assert items["m1"]["explanation"]["controls"] == "/guardrail/controls"


async def test_an_anonymous_caller_gets_no_link_nobody_could_follow(client: httpx.AsyncClient) -> None:
    response = await client.get("/recommendations")
    assert response.status_code == 200
    for entry in response.json()["items"]:
        assert "why" not in entry["explanation"]


async def test_shadow_mode_leaves_the_body_alone(client_for: ClientFactory) -> None:
    client = client_for(make_app(mode="shadow"))
    response = await client.get("/recommendations", headers=as_user())
    assert b"why" not in response.content
    assert response.json()["items"] == DEFAULT_ITEMS


@pytest.mark.parametrize(
    "item_id", ["a/b", "café", "x y?z#", "100%", "...", 'a"b\\c', "%2e%2e", "a;b", "a//b", "/lead"]
)
async def test_an_id_is_one_percent_encoded_segment_that_leads_back_to_the_item(
    client_for: ClientFactory, item_id: str
) -> None:
    client = client_for(make_app([item(item_id, ["movies"], ["watch_history"])]))
    await consent(client)
    body = await recommend(client)
    decision = body["guardrail"]["decision"]
    link = body["items"][0]["explanation"]["why"]
    assert link == f"/guardrail/why/{decision}/{segment(item_id)}"
    page = await client.get(link, headers=as_user())
    assert page.status_code == 200, page.text
    view = await client.get(f"/guardrail/v1/decisions/{decision}/items/{quote(item_id, safe='')}", headers=as_user())
    assert view.status_code == 200
    assert view.json()["item"] == item_id


@pytest.mark.parametrize("item_id", [".", ".."])
async def test_a_dot_segment_id_gets_no_link_no_server_would_route(client_for: ClientFactory, item_id: str) -> None:
    client = client_for(make_app([item(item_id, ["movies"], ["watch_history"]), item("m1", ["movies"])]))
    await consent(client)
    body = await recommend(client)
    assert "why" not in body["items"][0]["explanation"]
    assert "why" in body["items"][1]["explanation"]


async def test_an_integer_id_links_by_its_digits(client_for: ClientFactory) -> None:
    client = client_for(make_app([{"id": 42, "categories": ["movies"], "signals": ["watch_history"]}]))
    await consent(client)
    body = await recommend(client)
    assert body["items"][0]["explanation"]["why"].endswith("/42")
    decision = body["guardrail"]["decision"]
    view = await client.get(f"/guardrail/v1/decisions/{decision}/items/42", headers=as_user())
    assert view.status_code == 200
    assert view.json()["item"] == "42"


# -- the JSON twin -----------------------------------------------------------------------------


async def test_the_item_says_what_decided_what_was_used_and_what_to_do(client: httpx.AsyncClient) -> None:
    await consent(client)
    decision = (await recommend(client))["guardrail"]["decision"]
    response = await client.get(f"/guardrail/v1/decisions/{decision}/items/m1", headers=as_user())
    assert response.status_code == 200
    view = response.json()
    assert view["action"] == "keep"
    assert view["signals"] == [{"name": "watch_history", "label": "what you watched"}]
    assert view["categories"] == [{"name": "movies", "label": "movies", "sensitive": False, "known": True}]
    assert view["rule"] == "Your settings let us use this data to pick suggestions for you."
    kinds = [(a["kind"], a.get("category") or a.get("signal")) for a in view["actions"]]
    assert kinds == [("mute", "movies"), ("snooze", "movies"), ("signal_off", "watch_history"), ("report", None)]
    mute = view["actions"][0]
    assert mute["text"] == "Not interested in movies"
    assert (mute["method"], mute["href"]) == ("PATCH", "/guardrail/v1/controls")
    # Each action's request works as it is written.
    done = await client.patch(
        mute["href"], headers={**as_user(), "content-type": mute["content_type"]}, content=orjson.dumps(mute["body"])
    )
    assert done.status_code == 200
    assert done.json()["muted"] == {"movies": {"until": None}}
    again = (await client.get(f"/guardrail/v1/decisions/{decision}/items/m1", headers=as_user())).json()
    assert [a["kind"] for a in again["actions"]] == ["signal_off", "report"]  # movies is muted for good now


async def test_a_popular_item_says_no_data_was_used(client: httpx.AsyncClient) -> None:
    await consent(client)
    decision = (await recommend(client))["guardrail"]["decision"]
    view = (await client.get(f"/guardrail/v1/decisions/{decision}/items/s1", headers=as_user())).json()
    assert view["signals"] == []
    assert "mute" in view["rule"] or "muted" in view["rule"]
    assert [a["kind"] for a in view["actions"]] == ["mute", "snooze", "report"]


async def test_the_item_view_speaks_the_callers_language(client: httpx.AsyncClient) -> None:
    await consent(client, locale="ko")
    decision = (await recommend(client))["guardrail"]["decision"]
    view = (await client.get(f"/guardrail/v1/decisions/{decision}/items/m1", headers=as_user())).json()
    assert view["actions"][0]["text"].endswith("관심 없음")


@pytest.mark.parametrize("path", ["/guardrail/v1/decisions/{d}/items/m1", "/guardrail/why/{d}/m1"])
async def test_someone_elses_item_is_not_found(client: httpx.AsyncClient, path: str) -> None:
    await consent(client)
    decision = (await recommend(client))["guardrail"]["decision"]
    theirs = await client.get(path.format(d=decision), headers=as_user("mallory"))
    assert theirs.status_code == 404
    assert "movies" not in theirs.text and "what you watched" not in theirs.text
    missing = await client.get(path.format(d=decision).replace("m1", "nope"), headers=as_user())
    assert missing.status_code == 404
    anonymous = await client.get(path.format(d=decision))
    assert anonymous.status_code == 401


# -- the page ----------------------------------------------------------------------------------


async def test_the_page_names_the_data_and_topic_by_their_labels(client: httpx.AsyncClient) -> None:
    await consent(client)
    body = await recommend(client)
    page = await client.get(kept(body)["m1"]["explanation"]["why"], headers=as_user())
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    text = html.unescape(page.text)
    assert "Why am I seeing this?" in text
    assert "what you watched" in text and "watch_history" not in text.replace('value="watch_history"', "")
    assert "Not interested in movies" in text
    assert "Snooze movies for 30 days" in text
    assert "Don't use what you watched for suggestions" in text
    assert "<script" not in page.text


async def test_the_page_in_korean(client: httpx.AsyncClient) -> None:
    await consent(client)
    body = await recommend(client)
    page = await client.get(kept(body)["m1"]["explanation"]["why"], headers=as_user(**{"accept-language": "ko"}))
    assert '<html lang="ko">' in page.text
    assert "이 항목이 왜 보이나요?" in page.text


async def test_a_discreet_item_stays_discreet_until_opened(client: httpx.AsyncClient) -> None:
    await consent(client)
    body = await recommend(client)
    p1 = kept(body)["p1"]
    assert p1["explanation"]["because"] == []  # discreet on the page itself
    page = (await client.get(p1["explanation"]["why"], headers=as_user())).text
    before, details = page.split("<details>", 1)
    assert "data from our partners" not in before and "sports" not in before.lower()
    assert "data from our partners" in details


async def page_and_token(client: httpx.AsyncClient, link: str, user: str = "alice") -> str:
    page = await client.get(link, headers=as_user(user))
    assert page.status_code == 200
    return token_from(page.text)


async def test_not_interested_hides_the_topic_from_the_next_suggestions(client: httpx.AsyncClient) -> None:
    await consent(client)
    link = kept(await recommend(client))["m1"]["explanation"]["why"]
    token = await page_and_token(client, link)
    done = await client.post(
        link, headers={**FORM, **as_user()}, data={"csrf": token, "do": "mute", "category": "movies"}
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"{link}?done=change"
    assert "Done." in (await client.get(done.headers["location"], headers=as_user())).text
    assert set(kept(await recommend(client))) == {"s1", "p1"}  # m1 (movies) and m2 (movies.horror) are gone


async def test_snooze_and_signal_off_from_the_page(client: httpx.AsyncClient) -> None:
    await consent(client)
    link = kept(await recommend(client))["m1"]["explanation"]["why"]
    token = await page_and_token(client, link)
    form = {"csrf": token, "do": "snooze", "category": "movies"}
    assert (await client.post(link, headers={**FORM, **as_user()}, data=form)).status_code == 303
    form = {"csrf": token, "do": "signal_off", "signal": "watch_history"}
    assert (await client.post(link, headers={**FORM, **as_user()}, data=form)).status_code == 303
    state = (await client.get("/guardrail/v1/controls", headers=as_user())).json()
    assert state["signals"]["watch_history"] is False
    until = state["muted"]["movies"]["until"]
    assert until is not None and until > "2026"


@pytest.mark.parametrize(
    "form",
    [
        {"do": "mute", "category": "gambling"},  # not this item's topic
        {"do": "signal_off", "signal": "location_precise"},  # not used for it
        {"do": "erase"},
        {"do": "mute"},
    ],
)
async def test_a_form_can_do_only_what_the_item_offers(client: httpx.AsyncClient, form: dict[str, str]) -> None:
    await consent(client)
    link = kept(await recommend(client))["m1"]["explanation"]["why"]
    token = await page_and_token(client, link)
    response = await client.post(link, headers={**FORM, **as_user()}, data={"csrf": token, **form})
    assert response.status_code == 422
    state = (await client.get("/guardrail/v1/controls", headers=as_user())).json()
    assert state["muted"] == {} and state["signals"] == {}


async def test_a_form_without_a_valid_token_changes_nothing(client: httpx.AsyncClient) -> None:
    await consent(client)
    link = kept(await recommend(client))["m1"]["explanation"]["why"]
    mallory = CsrfTokens(b"x" * 32).issue("alice")
    for token in ("", mallory, await page_and_token(client, "/guardrail/controls", user="mallory")):
        form = {"csrf": token, "do": "mute", "category": "movies"}
        response = await client.post(link, headers={**FORM, **as_user()}, data=form)
        assert response.status_code == 403
    assert (await client.get("/guardrail/v1/controls", headers=as_user())).json()["muted"] == {}


async def test_someone_else_cannot_act_on_your_item(client: httpx.AsyncClient) -> None:
    await consent(client)
    link = kept(await recommend(client))["m1"]["explanation"]["why"]
    token = await page_and_token(client, "/guardrail/controls", user="mallory")
    form = {"csrf": token, "do": "mute", "category": "movies"}
    response = await client.post(link, headers={**FORM, **as_user("mallory")}, data=form)
    assert response.status_code == 404
    assert (await client.get("/guardrail/v1/controls", headers=as_user("mallory"))).json()["muted"] == {}


async def test_one_click_changes_are_rate_limited(client_for: ClientFactory) -> None:
    client = client_for(make_app(controls_rate_limit="2/minute"))
    await consent(client)  # the first change
    link = kept(await recommend(client))["m1"]["explanation"]["why"]
    token = await page_and_token(client, link)
    form = {"csrf": token, "do": "snooze", "category": "movies"}
    assert (await client.post(link, headers={**FORM, **as_user()}, data=form)).status_code == 303
    limited = await client.post(link, headers={**FORM, **as_user()}, data={**form, "do": "mute"})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


# -- what the upstream controls, and a store that is down ------------------------------------------


async def test_upstream_markup_in_titles_ids_and_topics_is_escaped(client_for: ClientFactory) -> None:
    evil = '<script>alert("x")</script>'
    routes = [{"path": "/recommendations", "items": "/items", "fields": {"title": "name"}}]
    upstream_items = [item(f"id{evil}", ["movies", f"topic{evil}"], ["watch_history"], name=evil)]
    client = client_for(make_app(upstream_items, routes=routes, unknown_categories="keep"))
    await consent(client)
    link = (await recommend(client))["items"][0]["explanation"]["why"]
    page = await client.get(link, headers=as_user())
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text  # the title, shown as text
    view = (await client.get(link.replace("/why/", "/v1/decisions/", 1).replace("/id", "/items/id", 1),
                             headers=as_user())).json()  # fmt: skip
    unknown = [c for c in view["categories"] if not c["known"]]
    assert [c["name"] for c in unknown] == [f"topic{evil}"]
    assert all(action.get("category") != f"topic{evil}" for action in view["actions"])  # cannot be muted by name


async def test_every_control_on_the_page_has_a_label_or_text(client: httpx.AsyncClient) -> None:
    await consent(client)
    link = kept(await recommend(client))["m1"]["explanation"]["why"]
    text = (await client.get(link, headers=as_user())).text
    for field in re.findall(r"<(?:input|textarea)[^>]*>", text):
        if 'type="hidden"' in field:
            continue
        found = re.search(r'id="([^"]+)"', field)
        assert found is not None and f'for="{found.group(1)}"' in text, field
    assert all(button.strip() for button in re.findall(r"<button[^>]*>([^<]*)</button>", text))


async def test_with_the_store_down_the_page_and_the_item_say_so(client_for: ClientFactory) -> None:
    from guardrail.errors import StoreError

    app = make_app()
    client = client_for(app)
    await consent(client)
    decision = (await recommend(client))["guardrail"]["decision"]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("down")

    store = app.runtime.store
    for name in ("load", "decision", "reports", "patch", "add_report"):
        setattr(store, name, broken)
    page = await client.get(f"/guardrail/why/{decision}/m1", headers=as_user())
    assert page.status_code == 503 and page.headers["retry-after"] == "1"
    assert "Traceback" not in page.text
    view = await client.get(f"/guardrail/v1/decisions/{decision}/items/m1", headers=as_user())
    assert view.status_code == 503 and view.headers["content-type"] == "application/problem+json"
