"""Image examples in a real browser (Debian's chromium via Playwright): the static report
from file:// and the served viewer under its Content Security Policy draw each top image with
its heat-map overlay exactly over the picture, and a crop beside it. Screenshots go to
tests/artifacts/vision/ (or $SPARSELENS_SCREENSHOTS)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from browser_helpers import NEEDS_CHROMIUM, served, watched_page
from browser_helpers import chromium as launch_chromium
from test_vision_report import make_image_run

SCREENSHOTS = Path(os.environ.get("SPARSELENS_SCREENSHOTS")
                   or Path(__file__).parent / "artifacts" / "vision")

pytestmark = NEEDS_CHROMIUM


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    from sparselens.interpretation.store import load_or_collect
    from sparselens.pipelines.report import ReportConfig, write_feature_report

    root, dictionary = make_image_run(tmp_path_factory.mktemp("vision-browser"))
    write_feature_report(ReportConfig(checkpoint=str(root / "sae"), cache=str(root / "cache"),
                                      out=str(root / "rep"), n_images=4))
    load_or_collect(root / "sae", dictionary, root / "cache")
    text = (root / "rep" / "data.js").read_text()
    images = json.loads(text[text.index("{"):text.rindex("}") + 1])["images"]["features"]
    latent = max(images, key=lambda k: len(images[k]))
    return root, int(latent), len(images[latent])


@pytest.fixture(scope="module")
def chromium():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with launch_chromium() as browser:
        yield browser


def open_page(chromium):
    return watched_page(chromium)


def check_images(page, n: int) -> None:
    """`n` figures, each with the overlay box equal to the picture box, and a crop."""
    figures = page.locator(".image-example")
    assert figures.count() == n
    for i in range(n):
        figure = figures.nth(i)
        picture = figure.locator(".image-frame .image-picture").bounding_box()
        overlay = figure.locator(".image-frame .image-overlay").bounding_box()
        assert picture and overlay and picture["width"] == pytest.approx(160, abs=1)
        assert all(abs(picture[k] - overlay[k]) < 1 for k in ("x", "y", "width", "height"))
        crop = figure.locator(".image-crop").bounding_box()
        assert crop and crop["width"] == pytest.approx(96, abs=1)
        assert figure.locator("figcaption").inner_text().count("patch (") == 1


def test_report_draws_heat_maps_over_pictures(image_run, chromium) -> None:
    root, latent, n = image_run
    page = open_page(chromium)
    page.goto((root / "rep" / "index.html").as_uri() + f"#feature-{latent}")
    page.wait_for_selector(".image-example")
    check_images(page, n)
    loaded = page.eval_on_selector_all(
        ".image-example img", "els => els.map(e => [e.className, e.naturalWidth])")
    assert all(width > 0 for _, width in loaded), loaded  # every picture and overlay decoded
    assert {width for name, width in loaded if name == "image-overlay"} == {4}  # one px/patch
    page.screenshot(path=str(SCREENSHOTS / "report-feature-images.png"), full_page=True)
    assert page.errors == []


def test_viewer_draws_heat_maps_under_its_csp(image_run, chromium) -> None:
    from sparselens.server.launch import build_app, open_stores

    root, latent, _ = image_run
    stores = open_stores([root / "sae"], examples=[root / "sae" / "examples"])
    with served(build_app(stores, None)) as base:
        page = open_page(chromium)
        page.goto(f"{base}/#/d/sae/{latent}")
        page.wait_for_selector(".image-example")
        n = page.locator(".image-example").count()
        assert n >= 1
        check_images(page, n)
        page.screenshot(path=str(SCREENSHOTS / "viewer-feature-images.png"), full_page=True)
        # a CSP violation (blocked image or style) logs an error; the logit lens answers 503
        # without a model, which is expected here
        assert [e for e in page.errors if "503" not in e] == []
