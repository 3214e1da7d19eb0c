"""The controls page in a real headless Chromium, used with the keyboard only (issue 4).

Needs Debian's browser (`apt-get install -y chromium`) and `pip install playwright`; no `playwright install`.
Skipped when either is missing. Saves the README's screenshot to `docs/controls-page.png`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware
from tests.conftest import ROOT, make_policy
from tests.upstream import Upstream

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The picture in the README: refreshed only on request (GUARDRAIL_SCREENSHOT=docs/controls-page.png), so that a
# test run leaves the checkout as it found it.
DOC_SCREENSHOT = os.environ.get("GUARDRAIL_SCREENSHOT")
USER = {"x-user-id": "alice"}


@pytest.fixture
def server(unused_port: int) -> Iterator[str]:
    app = GuardrailMiddleware(Upstream(), policy=make_policy(), registry=CollectorRegistry())
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


def test_keyboard_only_changes_reach_recommendations(server: str, tmp_path: Path) -> None:
    # No skip: .ci/run installs Debian's chromium, and a missing browser must fail loudly here.
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install chromium"
    from playwright import sync_api

    with httpx.Client(base_url=server, headers=USER) as http:
        granted = http.patch(
            "/guardrail/v1/controls",
            json={"consent": {"personalization": "granted"}},
            headers={"content-type": "application/merge-patch+json"},
        )
        assert granted.status_code == 200
        before = {item["id"] for item in http.get("/recommendations").json()["items"]}
        assert {"m2", "s1"} <= before

        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context(
                    extra_http_headers=USER, viewport={"width": 900, "height": 1000}, locale="en-US"
                )
                page = context.new_page()
                page.goto(f"{server}/guardrail/controls")
                assert page.get_attribute("html", "lang") == "en"

                def tab_to(label: str) -> None:
                    """Press Tab until the control labelled `label` has the focus."""
                    for _ in range(60):
                        page.keyboard.press("Tab")
                        focused = page.evaluate(
                            "() => { const e = document.activeElement;"
                            " return e && e.labels && e.labels.length ? e.labels[0].textContent.trim()"
                            " : (e ? e.textContent.trim() : ''); }"
                        )
                        if focused == label:
                            return
                    raise AssertionError(f"the keyboard never reached {label!r}")

                tab_to("what you searched for")
                page.keyboard.press("Space")
                assert page.is_checked("input[name='signal.search_history']") is False

                tab_to("sports")
                for _ in range(3):  # show → snooze 7 days → snooze 30 days → mute
                    page.keyboard.press("ArrowDown")
                assert page.input_value("select[name='topic.sports']") == "mute"

                tab_to("Save my settings")
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                assert page.url.endswith("/guardrail/controls?saved=1")
                assert page.get_by_role("status").inner_text() == "Saved."

                after = {item["id"] for item in http.get("/recommendations").json()["items"]}
                assert "m2" not in after  # it relied on "what you searched for"
                assert "s1" not in after and "p1" not in after  # sports is muted
                assert "m1" in after

                state = http.get("/guardrail/v1/controls").json()
                assert state["signals"]["search_history"] is False
                assert state["muted"] == {"sports": {"until": None}}

                # The page now also says what was hidden and why.
                page.goto(f"{server}/guardrail/controls?saved=1")
                assert page.get_by_text("Item s1").count() == 1
                tab_to("Use my activity to suggest things for me")  # the focus ring shows in the picture
                screenshot = ROOT / DOC_SCREENSHOT if DOC_SCREENSHOT else tmp_path / "controls-page.png"
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
    assert screenshot.stat().st_size > 10_000


# The why page's picture in the README, refreshed on request as the controls page's is.
WHY_SCREENSHOT = os.environ.get("GUARDRAIL_WHY_SCREENSHOT")


def test_keyboard_only_a_why_link_leads_to_not_interested(server: str, tmp_path: Path) -> None:
    """A recommendation's `why` link, followed in the browser with the keyboard only: the page explains the
    item, and "Not interested in movies" takes movies out of the next recommendations."""
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install chromium"
    from playwright import sync_api

    with httpx.Client(base_url=server, headers=USER) as http:
        granted = http.patch(
            "/guardrail/v1/controls",
            json={"consent": {"personalization": "granted"}},
            headers={"content-type": "application/merge-patch+json"},
        )
        assert granted.status_code == 200
        shown = {item["id"]: item for item in http.get("/recommendations").json()["items"]}
        assert {"m1", "m2"} <= set(shown)
        why = shown["m1"]["explanation"]["why"]

        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context(
                    extra_http_headers=USER, viewport={"width": 900, "height": 1000}, locale="en-US"
                )
                page = context.new_page()
                # The service's own page shows the recommendation with its explanation and link, as a site would.
                page.goto(f"{server}/guardrail/healthz")  # same origin as the links
                page.set_content(
                    "<!doctype html><html lang=en><body><h1>For you</h1><ul>"
                    + "".join(
                        f"<li>{item_id}: {item['explanation']['text']} "
                        f'<a href="{server}{item["explanation"]["why"]}">Why am I seeing {item_id}?</a></li>'
                        for item_id, item in shown.items()
                    )
                    + "</ul></body></html>"
                )

                def tab_to(text: str) -> None:
                    for _ in range(40):
                        page.keyboard.press("Tab")
                        if page.evaluate("() => document.activeElement.textContent.trim()") == text:
                            return
                    raise AssertionError(f"the keyboard never reached {text!r}")

                tab_to("Why am I seeing m1?")
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                assert page.url == f"{server}{why}"
                assert page.get_attribute("html", "lang") == "en"
                assert page.get_by_role("heading", level=1).inner_text() == "Why am I seeing this?"
                assert page.get_by_role("listitem").filter(has_text="what you watched").count() == 1  # by its label
                assert "watch_history" not in page.inner_text("body")
                screenshot = ROOT / WHY_SCREENSHOT if WHY_SCREENSHOT else tmp_path / "why-page.png"
                page.screenshot(path=str(screenshot), full_page=True)

                tab_to("Not interested in movies")
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                assert page.url == f"{server}{why}?done=change"
                assert page.get_by_role("status").inner_text().startswith("Done.")
            finally:
                browser.close()

        after = {item["id"] for item in http.get("/recommendations").json()["items"]}
        assert "m1" not in after and "m2" not in after  # movies, and horror films under it
        assert http.get("/guardrail/v1/controls").json()["muted"] == {"movies": {"until": None}}
    assert screenshot.stat().st_size > 10_000
