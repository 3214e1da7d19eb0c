"""The HTML controls page (docs/architecture.md §7, issue 4): rendered, localized, CSRF-protected, escaped."""

from __future__ import annotations

import html
import re
from importlib import resources
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from guardrail.errors import StoreError
from guardrail.messages import CATALOGS, message
from guardrail.web.csrf import CsrfTokens
from tests.conftest import ClientFactory, make_policy
from tests.upstream import Upstream, item

PAGE = "/guardrail/controls"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def as_user(user: str = "alice", **headers: str) -> dict[str, str]:
    return {"x-user-id": user, **headers}


def token_from(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


async def page_token(client: httpx.AsyncClient, user: str = "alice") -> str:
    response = await client.get(PAGE, headers=as_user(user))
    assert response.status_code == 200
    return token_from(response.text)


async def post(client: httpx.AsyncClient, form: dict[str, str], path: str = PAGE, **headers: str) -> httpx.Response:
    return await client.post(path, headers={**FORM, **headers}, data=form)


async def controls(client: httpx.AsyncClient, user: str = "alice") -> dict[str, Any]:
    response = await client.get("/guardrail/v1/controls", headers=as_user(user))
    data: dict[str, Any] = response.json()
    return data


async def grant_consent(client: httpx.AsyncClient, user: str = "alice") -> None:
    response = await client.patch(
        "/guardrail/v1/controls",
        headers={**as_user(user), "content-type": "application/merge-patch+json"},
        content=orjson.dumps({"consent": {"personalization": "granted"}}),
    )
    assert response.status_code == 200


def full_form(token: str, consent: str = "personalization,measurement", **changes: str) -> dict[str, str]:
    """What a browser sends for the page of a consented user: personalization, the purposes agreed to and
    every signal ticked, topics shown."""
    form = {"csrf": token, "personalization": "on", "locale": ""}
    form.update({f"consent.{name}": "on" for name in consent.split(",") if name})
    policy = make_policy()
    for name in policy.signals:
        form[f"signal.{name}"] = "on"
    for name in policy.categories:
        form[f"topic.{name}"] = "show"
    form.update(changes)
    return form


async def test_page_renders_the_policy_in_plain_labels(client: httpx.AsyncClient) -> None:
    response = await client.get(PAGE, headers=as_user())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert '<html lang="en">' in page
    assert "<main" in page and 'method="post"' in page and f'action="{PAGE}"' in page
    for text in ("what you watched", "your exact location", "data from our partners", "horror films", "gambling"):
        assert text in page
    assert message("en", "page.personalization.help") in page
    assert 'role="status"' not in page
    # Every control has a label, and no resource is loaded from anywhere.
    ids = re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', page)
    assert ids and all(f'<label for="{i}">' in page for i in ids)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert ":focus-visible" in page
    assert page.count("<fieldset>") == page.count("<legend>") >= 4


async def test_korean_with_accept_language(client: httpx.AsyncClient) -> None:
    response = await client.get(PAGE, headers=as_user(**{"accept-language": "ko-KR,ko;q=0.9,en;q=0.5"}))
    assert '<html lang="ko">' in response.text
    assert message("ko", "page.title") in response.text and "시청 기록" not in response.text  # test labels: "... (ko)"
    assert "what you watched (ko)" in response.text


async def test_the_users_locale_control_wins(client: httpx.AsyncClient) -> None:
    token = await page_token(client)
    assert (await post(client, full_form(token, locale="ko"), **as_user())).status_code == 303
    response = await client.get(PAGE, headers=as_user(**{"accept-language": "en"}))
    assert '<html lang="ko">' in response.text
    assert '<option value="ko" lang="ko" selected>' in response.text


async def test_post_turns_off_a_signal_and_mutes_a_topic(client: httpx.AsyncClient) -> None:
    await grant_consent(client)
    before = await client.get("/recommendations", headers=as_user())
    assert {i["id"] for i in before.json()["items"]} >= {"m1", "m2", "s1"}

    token = await page_token(client)
    form = full_form(token, **{"topic.sports": "mute"})
    del form["signal.search_history"]  # unticked: a browser sends nothing
    response = await post(client, form, **as_user())
    assert response.status_code == 303
    assert response.headers["location"] == f"{PAGE}?saved=1"

    state = await controls(client)
    assert state["signals"]["search_history"] is False and state["signals"]["watch_history"] is True
    assert state["muted"] == {"sports": {"until": None}}
    # The form states every purpose: the ones ticked are a yes, the others a no.
    assert state["consent"] == {"personalization": "granted", "measurement": "granted", "sharing": "denied"}

    after = await client.get("/recommendations", headers=as_user())
    kept = {i["id"] for i in after.json()["items"]}
    assert "m2" not in kept  # relied on what you searched for
    assert "s1" not in kept and "p1" not in kept  # sports is muted
    assert "m1" in kept

    saved = await client.get(f"{PAGE}?saved=1", headers=as_user())
    assert f'<p class="status" role="status">{message("en", "page.saved")}</p>' in saved.text
    assert re.search(r'<option value="mute" selected>', saved.text)
    assert 'name="signal.search_history" value="on">' in saved.text  # shown unticked
    # What was hidden, and why, newest first.
    assert "Item s1" in saved.text and "Item m2" in saved.text


async def test_snooze_shows_until_when(client: httpx.AsyncClient) -> None:
    token = await page_token(client)
    assert (await post(client, full_form(token, **{"topic.movies": "snooze7"}), **as_user())).status_code == 303
    until = (await controls(client))["muted"]["movies"]["until"]
    page = (await client.get(PAGE, headers=as_user())).text
    assert f'<option value="keep" selected>Snoozed until {until[:10]}' in page
    # Sending the form again unchanged keeps the snooze as it was.
    assert (await post(client, full_form(token, **{"topic.movies": "keep"}), **as_user())).status_code == 303
    assert (await controls(client))["muted"]["movies"]["until"] == until


async def test_post_without_a_valid_token_is_refused(client: httpx.AsyncClient) -> None:
    token = await page_token(client)
    form = full_form(token, personalization="")
    del form["personalization"]
    for bad in (None, "", "0" * 64, await page_token(client, "mallory"), "é"):
        sent = dict(form)
        if bad is None:
            del sent["csrf"]
        else:
            sent["csrf"] = bad
        response = await post(client, sent, **as_user())
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("text/html")
        assert message("en", "page.error.403.title") in response.text and "Traceback" not in response.text
    assert (await controls(client))["revision"] == 0


def test_tokens_last_one_window_more() -> None:
    tokens = CsrfTokens(b"k", window=100)
    token = tokens.issue("alice", now=1000)
    assert tokens.verify("alice", token, now=1099) and tokens.verify("alice", token, now=1199)
    assert not tokens.verify("alice", token, now=1200)
    assert not tokens.verify("bob", token, now=1000)


async def test_anonymous_gets_401(client: httpx.AsyncClient) -> None:
    assert (await client.get(PAGE)).status_code == 401
    response = await post(client, {"csrf": "x"})
    assert response.status_code == 401 and "<html" in response.text
    assert (await post(client, {"csrf": "x", "confirm": "yes"}, f"{PAGE}/erase")).status_code == 401


async def test_user_controlled_markup_is_escaped(client: httpx.AsyncClient) -> None:
    evil = '<script>alert("x")</script>'
    token = await page_token(client)
    response = await post(client, full_form(token, **{f"signal.{evil}": "on", "topic.movies": evil}), **as_user())
    assert response.status_code == 422
    assert evil not in response.text
    assert html.escape(evil, quote=False) in response.text or "&lt;script&gt;" in response.text
    # The unknown name is quoted (json-style, so blanks and look-alikes show), then HTML-escaped.
    assert "signals.&#34;&lt;script&gt;" in response.text and "muted.movies" in response.text
    assert (await controls(client))["revision"] == 0
    # A user id is user-controlled too.
    page = await client.get(PAGE, headers=as_user("a<b>"))
    assert page.status_code == 200 and "<b>" not in page.text


async def test_rate_limited_like_patch(client_for: ClientFactory) -> None:
    policy = make_policy(controls_rate_limit="2/minute")
    client = client_for(GuardrailMiddleware(Upstream(), policy=policy, registry=CollectorRegistry()))
    token = await page_token(client)
    for _ in range(2):
        assert (await post(client, full_form(token), **as_user())).status_code == 303
    response = await post(client, full_form(token), **as_user())
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert "<html" in response.text


async def test_store_down_is_503(app: GuardrailMiddleware, client: httpx.AsyncClient) -> None:
    token = await page_token(client)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("down")

    app.store.patch = broken  # type: ignore[method-assign]
    response = await post(client, full_form(token), **as_user())
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    app.store.load = broken  # type: ignore[method-assign]
    assert (await client.get(PAGE, headers=as_user())).status_code == 503


async def test_erase_needs_the_confirmation(client: httpx.AsyncClient) -> None:
    token = await page_token(client)
    await post(client, full_form(token, **{"topic.sports": "mute"}), **as_user())
    assert (await controls(client))["revision"] == 1

    response = await post(client, {"csrf": token}, f"{PAGE}/erase", **as_user())
    assert response.status_code == 422
    assert message("en", "page.error.422.confirm") in response.text
    assert (await controls(client))["revision"] == 1
    assert (await post(client, {"confirm": "yes"}, f"{PAGE}/erase", **as_user())).status_code == 403

    response = await post(client, {"csrf": token, "confirm": "yes"}, f"{PAGE}/erase", **as_user())
    assert response.status_code == 303 and response.headers["location"] == f"{PAGE}?erased=1"
    assert (await controls(client))["revision"] == 0
    page = await client.get(response.headers["location"], headers=as_user())
    assert message("en", "page.erased") in page.text


async def test_explanations_link_to_this_page(client: httpx.AsyncClient) -> None:
    await grant_consent(client)
    body = (await client.get("/recommendations", headers=as_user())).json()
    link = body["items"][0]["explanation"]["controls"]
    assert link == PAGE
    assert (await client.get(link, headers=as_user())).status_code == 200


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    assert (await client.put(PAGE, headers=as_user())).status_code == 405
    assert (await client.get(f"{PAGE}/erase", headers=as_user())).status_code == 405


def test_every_text_the_page_shows_is_in_the_message_catalog() -> None:
    """The page's texts live in the one catalog (guardrail/messages), whose completeness in every locale
    tests/explain/test_messages.py checks; here, that every key the templates and the page use is in it."""
    for name in ("base.html", "controls.html", "error.html"):
        source = resources.files("guardrail.web").joinpath("templates", name).read_text("utf-8")
        keys = re.findall(r't\("([\w.]+)"', source)
        assert keys, name
        for key in keys:
            assert f"page.{key}" in CATALOGS["en"], (name, key)
    page = resources.files("guardrail.web").joinpath("page.py").read_text("utf-8")
    for key in re.findall(r'"page\.([\w.]+)"', page):
        assert f"page.{key}" in CATALOGS["en"], key
    for status in (401, 403, 422, 429, 503):
        assert f"page.error.{status}.title" in CATALOGS["en"] and f"page.error.{status}.text" in CATALOGS["en"]


async def test_a_user_never_asked_can_say_yes_on_the_page(client: httpx.AsyncClient) -> None:
    before = await client.get("/recommendations", headers=as_user("dora"))
    assert "m1" not in {i["id"] for i in before.json()["items"]}  # watch_history needs consent
    page = (await client.get(PAGE, headers=as_user("dora"))).text
    assert 'name="consent.personalization" value="on">' in page  # shown, not ticked: the default is denied
    token = await page_token(client, "dora")
    assert (await post(client, full_form(token, consent="personalization"), **as_user("dora"))).status_code == 303
    after = await client.get("/recommendations", headers=as_user("dora"))
    assert "m1" in {i["id"] for i in after.json()["items"]}


async def receipt_actions(client: httpx.AsyncClient, user: str = "alice") -> dict[str, tuple[str, list[str]]]:
    """What a fresh page of recommendations did with each item, from its receipt: item -> (action, reasons)."""
    page = await client.get("/recommendations", headers=as_user(user))
    receipt = await client.get(f"/guardrail/v1/decisions/{page.headers['guardrail-decision']}", headers=as_user(user))
    return {i["id"]: (i["action"], i["reasons"]) for i in receipt.json()["items"]}


async def test_the_sensitive_topics_help_says_what_the_rule_does(client_for: ClientFactory) -> None:
    # Issue 18, point 6: the opt-in only governs suggestions picked from the user's activity. Items everyone
    # sees are still shown (discreetly) in a sensitive topic; only muting the topic hides them, and the help
    # text says so and points there, in every language.
    for locale in CATALOGS:
        help_text = message(locale, "page.sensitive.help")
        assert message(locale, "page.topics.legend") in help_text, locale
        assert message(locale, "page.topic.mute").casefold() in help_text.casefold(), locale
    body = {"items": [item("g0", ["gambling"], []), item("g1", ["gambling"], ["watch_history"])]}
    client = client_for(GuardrailMiddleware(Upstream(body=body), policy=make_policy(), registry=CollectorRegistry()))
    await grant_consent(client)
    page = await client.get(PAGE, headers=as_user())
    assert html.escape(message("en", "page.sensitive.help"), quote=False) in page.text
    assert 'name="sensitive.gambling" value="on">' in page.text  # not opted in

    # Not opted in: the personal pick is hidden, the item everyone sees is kept, discreetly.
    assert await receipt_actions(client) == {"g0": ("discreet", []), "g1": ("hide", ["sensitive_needs_opt_in"])}

    # Opting in lets the personal pick through, still discreetly.
    form = full_form(await page_token(client), consent="personalization", **{"sensitive.gambling": "on"})
    assert (await post(client, form, **as_user())).status_code == 303
    assert await receipt_actions(client) == {"g0": ("discreet", []), "g1": ("discreet", [])}

    # Muting the topic, as the help text says, hides both, opted in or not.
    changes = {"sensitive.gambling": "on", "topic.gambling": "mute"}
    form = full_form(await page_token(client), consent="personalization", **changes)
    assert (await post(client, form, **as_user())).status_code == 303
    assert await receipt_actions(client) == {"g0": ("hide", ["topic_muted"]), "g1": ("hide", ["topic_muted"])}
