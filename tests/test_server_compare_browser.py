"""The compare page in a real browser (Debian's chromium through Playwright, under the page's
strict CSP): a compare.json of two tiny served dictionaries compared on a tiny activation cache,
then a permuted copy that is not served. The page must draw what the record holds (histogram
bars, PW-MCC, SVCCA/CKA, pairs, novel latents), link served latents to their feature pages and
leave unserved ones as plain text. Screenshots go beside the other viewer screenshots."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from browser_helpers import NEEDS_CHROMIUM, chromium, served, watched_page
from conftest import random_chunks
from dictionary_helpers import permuted
from sparselens.comparison.compare import CompareOptions, compare_dictionaries
from sparselens.comparison.compare_output import write_comparison
from sparselens.io.detect import load_any
from sparselens.io.native import save_dictionary
from sparselens.server.comparisons import load_comparisons
from sparselens.server.launch import build_app, open_stores
from test_server_browser import SCREENSHOTS, ready, snap
from viewer_helpers import HOOK, make_served_run

pytestmark = NEEDS_CHROMIUM


def _permuted_copy(folder: Path, out: Path) -> Path:
    """The dictionary in `folder` with its latents reordered, saved to `out`."""
    return save_dictionary(permuted(load_any(folder)), out)


def _records(root: Path, folders: list[Path], tiny_llama) -> dict[str, dict]:
    """seeds/compare.json (run_a vs run_b, both served) and self/compare.json (run_a vs a
    permuted copy that is not served), both with shared tokens from a tiny cache."""
    from sparselens.data.cache import ActivationCache
    from sparselens.data.harvest import HarvestConfig, harvest

    cache_dir = root / "cache"
    harvest(tiny_llama, random_chunks(40, length=32), [HOOK], cache_dir,
            HarvestConfig(batch_size=8, shard_tokens=256, heldout_fraction=0.2,
                          progress=False))
    cache = ActivationCache.open(cache_dir)
    permuted = _permuted_copy(folders[0], root / "permuted")
    records = {}
    for name, (x, y) in (("seeds", folders), ("self", (folders[0], permuted))):
        result = compare_dictionaries(load_any(x), load_any(y), (str(x), str(y)), cache,
                                      options=CompareOptions(n_permutations=5))
        write_comparison(result, root / name)
        records[name] = json.loads((root / name / "compare.json").read_text())
    return records


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama, one_thread):
    root = tmp_path_factory.mktemp("compare-served")
    run = make_served_run(root, tiny_llama)
    records = _records(root, run.folders, tiny_llama)
    app = build_app(open_stores(run.folders), run.model,
                    comparisons=load_comparisons([root / "seeds", root / "self"]))
    with served(app) as base:
        yield base, records


@pytest.fixture(scope="module")
def browser(server):
    base, _ = server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as launched:
        yield watched_page(launched, base)


def _visit(page, hash_: str) -> None:
    page.goto(f"{page.base}/{hash_}")
    ready(page, hash_)


def _number(text: str, label: str) -> float:
    found = re.search(label + r" ([-0-9.,]+)", text)
    assert found, (label, text)
    return float(found.group(1).replace(",", ""))


def test_compare_page_draws_the_record_and_links_pairs_to_feature_pages(browser, server):
    page = browser
    _, records = server
    record = records["seeds"]
    _visit(page, "#/compare/seeds")
    snap(page, "compare")
    assert page.locator("h1").inner_text() == "Comparison · seeds"
    assert "served as run_a-sae" in page.locator("#view").inner_text()
    blocks = page.locator(".compare-matching")
    assert blocks.count() == 2  # decoder cosine and activation correlation
    for i, key in enumerate(("decoder_matching", "activation_matching")):
        block, summary = blocks.nth(i), record[key]
        title = block.locator("h3").inner_text()
        assert _number(title, "PW-MCC") == pytest.approx(summary["pwmcc"], abs=1e-3)
        nonzero = sum(c > 0 for c in summary["histogram"]["counts"])
        assert nonzero >= 1
        assert block.locator(".histogram rect.bar").count() == nonzero
        pairs = record["pairs"][key.split("_")[0]]
        rows = block.locator("table.compare-table tr")
        assert rows.count() == 1 + min(50, len(pairs["a"]))
        # Laid out as a table: the first two pairs on rows one under the other, each
        # row's cells side by side.
        top, second = rows.nth(1).bounding_box(), rows.nth(2).bounding_box()
        assert second["y"] >= top["y"] + top["height"] - 1
        first = rows.nth(1).locator("td")
        cells = [first.nth(j).bounding_box() for j in range(3)]
        assert cells[0]["x"] < cells[1]["x"] < cells[2]["x"]
        assert abs(cells[0]["y"] - cells[2]["y"]) < 2
        assert first.nth(0).inner_text() == f"A {pairs['a'][0]}"
        assert first.nth(1).inner_text() == f"B {pairs['b'][0]}"
        assert float(first.nth(2).inner_text()) == pytest.approx(pairs["similarity"][0],
                                                                 abs=1e-3)
    universality = page.locator(".compare-universality")
    assert [universality.locator("td").nth(i).inner_text() for i in (0, 4)] == ["SVCCA",
                                                                                 "CKA"]
    cka = universality.locator("tr").nth(2).locator("td").nth(1).inner_text()
    assert float(cka) == pytest.approx(record["universality"]["cka"]["paired"], abs=1e-3)
    for side in "AB":
        novel = page.locator(".compare-novel", has_text=f"Novel in {side}")
        assert f"{len(record['novel'][side])} latents" in novel.locator("h3").inner_text()
        assert novel.locator("a").count() == min(200, len(record["novel"][side]))
    assert page.errors == []

    # Follow the best decoder pair's B latent to its feature page, and come back.
    latent = record["pairs"]["decoder"]["b"][0]
    best = blocks.first.locator("table.compare-table tr").nth(1)
    best.locator("a", has_text=f"B {latent}").click()
    ready(page, f"#/d/run_b-sae/{latent}")
    page.wait_for_selector(".top-examples")
    assert page.locator("h1").inner_text() == f"run_b-sae · latent {latent}"
    snap(page, "compare-feature")
    page.go_back()
    ready(page, "#/compare/seeds")
    assert page.locator(".compare-matching").count() == 2
    assert all(url.startswith(page.base) for url in page.urls), page.urls
    assert page.errors == []


def test_permuted_self_scores_one_and_unserved_side_has_no_links(browser, server):
    page = browser
    _, records = server
    record = records["self"]
    assert record["decoder_matching"]["pwmcc"] == 1.0
    _visit(page, "#/compare/self")
    snap(page, "compare-self")
    view = page.locator("#view").inner_text()
    assert "served as run_a-sae" in view and "not served (no links)" in view
    decoder = page.locator(".compare-matching").first
    assert _number(decoder.locator("h3").inner_text(), "PW-MCC") == 1
    row = decoder.locator("table.compare-table tr").nth(1)
    assert row.locator("td").nth(0).locator("a").count() == 1  # A is served: a link
    assert row.locator("td").nth(1).locator("a").count() == 0  # B is not: plain text
    assert row.locator("td").nth(1).inner_text().startswith("B ")
    assert page.locator(".compare-novel a").count() == 0  # nothing novel in a permutation
    assert page.errors == []


def test_compare_list_links_each_record(browser, server):
    page = browser
    _visit(page, "#/compares")
    rows = page.locator(".result")
    assert rows.count() == 2
    assert "decoder PW-MCC 1" in rows.nth(1).inner_text()
    rows.nth(0).locator(".result-link").click()
    ready(page, "#/compare/seeds")
    assert page.locator("h1").inner_text() == "Comparison · seeds"
    assert page.locator("nav [data-nav='compares']").get_attribute("class") == "active"
    assert page.errors == []
