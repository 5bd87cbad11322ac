"""The report in a real browser: Debian's chromium driven by Playwright, from file://."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from test_report import CAT, WORDS, make_report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
SCREENSHOT_DIR = os.environ.get("SPARSELENS_SCREENSHOTS")
"""Set to a folder to keep screenshots of the views the test visits (for looking at them)."""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is missing; install Debian's chromium "
                              "(`make browser` or scripts/install-chromium.sh)"),
]


def alpha(css_colour: str) -> float:
    """The alpha of a computed ``rgb(...)``/``rgba(...)`` colour."""
    numbers = [float(n) for n in re.findall(r"[\d.]+", css_colour)]
    return numbers[3] if len(numbers) == 4 else 1.0


@dataclass
class Browser:
    """The open report page, and what it logged since it was opened."""

    page: Any
    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    index, _, _ = make_report(tmp_path_factory.mktemp("report"))
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        session = Browser(chromium.new_page(viewport={"width": 1280, "height": 900}))
        session.page.on("pageerror", lambda err: session.errors.append(str(err)))
        session.page.on("console", lambda msg: msg.type == "error"
                        and session.errors.append(msg.text))
        session.page.on("request", lambda request: session.urls.append(request.url))
        session.page.goto(index.as_uri())
        session.page.wait_for_selector(".feature-card")
        yield session
        chromium.close()


def snap(page, name: str) -> None:
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}.png"), full_page=True)


def test_page_loads_offline_with_header_and_list(browser):
    page = browser.page
    snap(page, "list")
    assert page.inner_text("h1") == "Tiny <word> report"
    assert page.locator(".card .label", has_text="FVU").count() == 1
    assert page.locator(".plot img").count() == 2
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    n_live = len(WORDS) - 1  # the BOS detector never fires: BOS rows are not stored
    assert page.locator(".feature-card").count() == n_live
    assert page.inner_text("#result-count").startswith(f"{n_live} of ")
    assert all(url.startswith("file://") for url in browser.urls), browser.urls
    assert browser.errors == []


def test_search_by_word_then_open_the_feature(browser):
    page = browser.page
    page.goto(page.url.split("#")[0] + "#")
    page.fill("#search", "cat")
    first = page.locator(".feature-card").first
    assert first.get_attribute("data-id") == str(CAT)
    snap(page, "search")
    first.locator(".feature-link").click()
    page.wait_for_selector("#detail-view:not([hidden])")
    assert page.url.endswith(f"#feature-{CAT}")
    snap(page, "detail")
    assert page.locator("#detail-view h2").inner_text() == f"Feature {CAT}"
    centres = page.locator("#detail-view .top-examples .tok-center")
    assert centres.count() == 8
    for i in range(centres.count()):
        span = centres.nth(i)
        assert span.inner_text() == " cat"
        assert float(span.get_attribute("data-act")) > 0
        assert alpha(span.evaluate("s => getComputedStyle(s).backgroundColor")) > 0.1
    # Tokens that are not "cat" are not highlighted: this feature fires on "cat" only.
    others = page.locator("#detail-view .top-examples .tok:not(.tok-center)")
    backgrounds = others.evaluate_all(
        "spans => spans.map(s => [s.innerText, getComputedStyle(s).backgroundColor])")
    assert backgrounds and all((alpha(bg) > 0) == (text == " cat") for text, bg in backgrounds)
    assert page.locator("#detail-view .quantile-group").count() == 5
    assert browser.errors == []


def test_search_by_id_and_back_to_the_list(browser):
    page = browser.page
    page.goto(page.url.split("#")[0] + "#")
    page.fill("#search", "#5")
    assert page.locator(".feature-card").first.get_attribute("data-id") == "5"
    page.fill("#search", str(len(WORDS) + 1))  # a dead feature, found although dead is hidden
    cards = page.locator(".feature-card")
    assert cards.count() == 1 and "never fired" in cards.first.inner_text()
    page.fill("#search", "no such text anywhere")
    assert page.locator(".feature-card").count() == 0
    assert page.locator(".empty").inner_text() == "No feature matches this search."
    page.fill("#search", "")
    page.select_option("#sort", "density-desc")
    shown = [int(card.get_attribute("data-id")) for card in page.locator(".feature-card").all()]
    density = page.evaluate("Object.fromEntries(window.SPARSELENS_REPORT.features"
                            ".map(f => [f.i, f.d || 0]))")
    assert len(shown) == len(WORDS) - 1
    assert [density[str(i)] for i in shown] == sorted(density[str(i)] for i in shown)[::-1]
    page.click(".feature-card .feature-link")
    page.wait_for_selector("#detail-view:not([hidden])")
    page.go_back()
    page.wait_for_selector("#list-view:not([hidden])")
    assert page.locator("#detail-view").is_hidden()
    assert browser.errors == []
