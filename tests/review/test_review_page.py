"""The review page (docs/review.md): without JavaScript, CSRF-protected, in English and Korean, and only for
reviewers; then the same page in a real headless Chromium, worked with the keyboard only."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.conftest import ClientFactory
from tests.review.conftest import REVIEWER, Service, as_user, middleware
from tests.web.test_page_browser import CHROMIUM, CHROMIUM_ARGS

FORM = {"content-type": "application/x-www-form-urlencoded"}


def token(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found is not None, html
    return found.group(1)


async def post(service: Service, entry: str, form: dict[str, str]) -> httpx.Response:
    return await service.client.post(f"/guardrail/review/{entry}", headers={**as_user(REVIEWER), **FORM}, data=form)


@pytest.mark.parametrize("who", [{"x-user-id": "alice"}, {}])
async def test_anyone_but_a_reviewer_finds_nothing_there(service: Service, who: dict[str, str]) -> None:
    absent = await service.client.get("/guardrail/nothing-here", headers=who)
    for method, path in (("GET", "/guardrail/review"), ("POST", "/guardrail/review/0123456789abcdef")):
        response = await service.client.request(method, path, headers=who)
        assert response.status_code == 404
        assert response.headers["content-type"] == absent.headers["content-type"]


async def test_the_page_lists_the_queue_and_decides_with_a_plain_form(service: Service) -> None:
    await service.shown()
    await service.store.review_queue().flush()
    page = await service.client.get("/guardrail/review", headers=as_user(REVIEWER))
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "<script" not in page.text and '<html lang="en">' in page.text
    assert 'New topic we do not know: <span class="item-id">sportsbook</span>' in page.text
    entry = (await service.entry("unknown_category", "sportsbook"))["id"]
    form = {"csrf": token(page.text), "decision": "alias", "alias_of": "gambling", "note": "a bookmaker"}
    decided = await post(service, entry, form)
    assert decided.status_code == 303 and decided.headers["location"] == "/guardrail/review?decided=1"
    audit = await service.audit()
    assert [(a["decision"], a["details"]) for a in audit] == [
        ("label", {"category": "sportsbook", "alias_of": "gambling"})
    ]
    after = await service.client.get("/guardrail/review?decided=1", headers=as_user(REVIEWER))
    assert 'role="status"' in after.text and "sportsbook</span>" not in after.text
    assert "a bookmaker" in after.text  # the recent decisions, with their notes


async def test_without_its_token_or_a_note_nothing_is_decided(service: Service) -> None:
    await service.shown()
    entry = (await service.entry("unknown_category", "crypto"))["id"]
    forged = await post(service, entry, {"decision": "dismiss", "note": "n", "csrf": "0" * 64})
    assert forged.status_code == 403 and "expired" in forged.text
    page = await service.client.get("/guardrail/review", headers=as_user(REVIEWER))
    no_note = await post(service, entry, {"decision": "dismiss", "note": "", "csrf": token(page.text)})
    assert no_note.status_code == 422 and "<code>note</code>" in no_note.text
    assert await service.audit() == []


async def test_korean_reviewers_read_korean(client_for: ClientFactory) -> None:
    app = middleware("memory://")
    client = client_for(app)
    await client.get("/recommendations", headers=as_user("alice"))
    page = await client.get("/guardrail/review", headers={**as_user(REVIEWER), "accept-language": "ko"})
    assert '<html lang="ko">' in page.text and "검토 대기열" in page.text and "아직 모르는 새 주제" in page.text


@pytest.fixture
def server(unused_port: int) -> Iterator[str]:
    app = middleware("memory://")
    config = uvicorn.Config(app, host="127.0.0.1", port=unused_port, lifespan="off", ws="none", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{unused_port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_a_reviewer_names_a_new_topic_with_the_keyboard(server: str, tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install chromium"
    from playwright import sync_api

    with httpx.Client(base_url=server) as http:
        assert "m1" in [i["id"] for i in http.get("/recommendations", headers=as_user("alice")).json()["items"]]
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context(extra_http_headers=as_user(REVIEWER), locale="en-US")
                page = context.new_page()
                page.goto(f"{server}/guardrail/review")
                assert page.get_attribute("html", "lang") == "en"
                # Every form control has a label a screen reader reads out.
                unlabelled = page.evaluate(
                    "() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
                    ".filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"
                )
                assert unlabelled == []
                section = page.get_by_role("region", name=re.compile("New topic we do not know: crypto"))
                assert section.count() == 1

                def tab_to(label: str) -> None:
                    for _ in range(200):
                        page.keyboard.press("Tab")
                        focused = page.evaluate(
                            "() => { const e = document.activeElement;"
                            " return e && e.labels && e.labels.length ? e.labels[0].textContent.trim()"
                            " : (e ? e.textContent.trim() : ''); }"
                        )
                        if focused == label:
                            return
                    raise AssertionError(f"the keyboard never reached {label!r}")

                # The crypto entry: a new topic, not private, named in both languages. Within a radio
                # group the arrow keys move the choice.
                section.get_by_label("It is the same as a topic we know").focus()
                page.keyboard.press("ArrowDown")
                assert section.get_by_label("It is a new topic").is_checked()
                tab_to("Name of the topic in English")
                page.keyboard.type("crypto")
                tab_to("Name of the topic in 한국어")
                page.keyboard.type("암호화폐")
                tab_to("Why did you decide this?")
                page.keyboard.type("a topic our catalogue now has")
                tab_to("Save the decision")
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                assert page.url.endswith("/guardrail/review?decided=1")
                assert "applies to everyone" in page.get_by_role("status").inner_text()
                page.screenshot(path=str(tmp_path / "review-page.png"), full_page=True)
            finally:
                browser.close()
        muted = http.patch(
            "/guardrail/v1/controls",
            headers={**as_user("alice"), "content-type": "application/merge-patch+json"},
            content=b'{"muted": {"crypto": {"until": null}}}',
        )
        assert muted.status_code == 200, muted.text  # a topic users can now mute
        assert "x1" not in [i["id"] for i in http.get("/recommendations", headers=as_user("alice")).json()["items"]]
