"""The served viewer in a real browser: Debian's chromium driven by Playwright against a real
uvicorn server on a free localhost port. Screenshots of every visited view go to
tests/artifacts/viewer/ (or $SPARSELENS_SCREENSHOTS), which CI keeps as artifacts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from browser_helpers import NEEDS_CHROMIUM, chromium, served, watched_page
from graph_helpers import SERVED_AS, write_graphs
from sparselens.server.graphs import load_graphs
from sparselens.server.launch import build_app, open_stores
from viewer_helpers import SCRIPT_TOKEN, make_served_run, top_token_of

SCREENSHOTS = Path(os.environ.get("SPARSELENS_SCREENSHOTS")
                   or Path(__file__).parent / "artifacts" / "viewer")

pytestmark = NEEDS_CHROMIUM


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama, one_thread):
    run = make_served_run(tmp_path_factory.mktemp("served"), tiny_llama)
    graphs = load_graphs(write_graphs(tmp_path_factory.mktemp("graphs")).values())
    app = build_app(open_stores(run.folders), run.model, graphs=graphs)
    run.graphs = {g.name: g.data for g in graphs}
    with served(app) as base:
        yield base, run


@pytest.fixture(scope="module")
def browser(server):
    base, _ = server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nviewer screenshots: {SCREENSHOTS}")
    with chromium() as launched:
        yield watched_page(launched, base)


def ready(page, hash_: str) -> None:
    """Wait until the page has rendered the view of `hash_` (the router marks it; no
    evaluated JavaScript: the page's CSP forbids eval, and the test keeps that CSP)."""
    page.wait_for_selector(f"#view[data-ready='{hash_.lstrip('#') or '/'}']")


def visit(page, hash_: str) -> None:
    page.goto(f"{page.base}/{hash_}")
    ready(page, hash_)


def snap(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_overview_renders_metrics_histograms_curves_and_pareto(browser):
    page = browser
    visit(page, "#/")
    snap(page, "overview")
    assert page.locator(".dictionary").count() == 2
    assert page.locator(".pareto .scatter circle").count() == 4  # 2 dictionaries x 2 plots
    first = page.locator(".dictionary").first
    assert first.locator(".card .label", has_text="FVU").count() == 1
    bars = first.locator(".histogram rect.bar")
    assert bars.count() > 3
    assert "log scale" in first.locator(".histogram").inner_text()
    assert first.locator(".line-chart path.curve").count() == 4
    assert all(url.startswith(page.base) for url in page.urls), page.urls
    assert page.errors == []


def test_search_by_token_then_open_the_feature(browser, server):
    page = browser
    _, run = server
    from sparselens.interpretation.examples import FeatureExamples

    examples = FeatureExamples.load(run.folders[0].parent / "report")
    latent = int(examples.counts.argmax())
    token = top_token_of(run.folders[0].parent / "report", latent, run.tokens)
    text = run.model.tokenizer.convert_ids_to_tokens([token])[0].replace("Ġ", " ")
    visit(page, "#/")
    page.fill("#quick-q", text)
    page.press("#quick-q", "Enter")
    page.wait_for_selector(".result")
    snap(page, "search")
    hit = page.locator(f".result[data-dictionary='run_a-sae'][data-latent='{latent}']")
    assert hit.count() == 1
    hit.locator(".result-link").click()
    page.wait_for_selector(".top-examples .example")
    page.wait_for_selector(".similar-block .similar-link")
    page.wait_for_selector(".logit-lens .token-row")
    snap(page, "feature")
    assert page.url.endswith(f"#/d/run_a-sae/{latent}")
    assert page.locator("h1").inner_text() == f"run_a-sae · latent {latent}"
    assert page.locator(".feature-main .histogram rect.bar").count() >= 1
    centres = page.locator(".top-examples .tok-centre")
    assert centres.count() == int(examples.top.valid[latent].sum())
    for i in range(centres.count()):
        span = centres.nth(i)
        assert float(span.get_attribute("data-act")) > 0
        assert re.match(r"activation ", span.get_attribute("title"))
        colour = span.evaluate("s => getComputedStyle(s).backgroundColor")
        assert colour.startswith("rgba(249, 115, 22")
    assert page.locator(".quantile-group").count() >= 1
    assert page.locator(".similar").count() == 2
    assert page.errors == []


def test_markup_in_a_token_renders_as_text(browser):
    page = browser
    visit(page, "#/search/" + quote(SCRIPT_TOKEN, safe=""))
    page.wait_for_selector(".result-link")
    page.locator(".result-link").first.click()
    page.wait_for_selector(".top-examples .example")
    shown = page.locator(".tok", has_text="<script>")
    assert shown.count() >= 1
    assert SCRIPT_TOKEN in shown.first.inner_text()
    assert page.evaluate("window.PWNED") is None
    assert page.locator("#view script, #view img").count() == 0
    snap(page, "markup-token")


def test_explanation_and_permalink(browser):
    page = browser
    visit(page, "#/d/run_a-sae/3")
    page.wait_for_selector(".explanation-text")
    assert page.locator(".explanations .explanation-text").inner_text() == \
        "the word Paris and <b>other</b> capitals"
    assert "detection 0.81" in page.locator(".explanations").inner_text()
    page.locator(".feature-nav a", has_text="next").click()
    ready(page, "#/d/run_a-sae/4")
    assert page.locator("h1").inner_text() == "run_a-sae · latent 4"
    page.go_back()
    ready(page, "#/d/run_a-sae/3")
    assert page.locator("h1").inner_text() == "run_a-sae · latent 3"
    assert page.errors == []


def test_text_playground_highlights_tokens_and_lists_latents_on_click(browser, server):
    page = browser
    text = "The capital of France is Paris."
    n_tokens = len(server[1].model.tokenizer(text).input_ids)
    visit(page, "#/playground?d=run_b-sae&f=4")
    page.fill("#playground-text", text)
    page.click("#playground-run")
    page.wait_for_selector("#playground-tokens .tok")
    tokens = page.locator("#playground-tokens .tok")
    assert tokens.count() == n_tokens
    assert "text=The%20capital" in page.url
    acts = [float(t) for t in tokens.evaluate_all("s => s.map(x => x.dataset.act)")]
    assert any(a != 0 for a in acts)
    tokens.nth(5).click()
    page.wait_for_selector(".token-detail h4")
    assert "token 5" in page.locator(".token-detail h4").inner_text()
    assert page.locator(".token-detail .firing li").count() >= 1
    snap(page, "playground")
    # The URL is a permalink: opening it again runs the same text.
    url = page.url
    page.goto(page.base + "/#/")
    page.goto(url)
    page.wait_for_selector("#playground-tokens .tok")
    assert page.locator("#playground-tokens .tok").count() == tokens.count()
    assert page.errors == []


def test_unknown_page_says_so(browser):
    page = browser
    visit(page, "#/no/such/page")
    assert "No such page" in page.locator(".error").inner_text()


def test_steering_playground_shows_both_generations(browser):
    page = browser
    visit(page, "#/steer?d=run_a-sae&f=2&coef=40&n=6")
    page.wait_for_selector(".steer-hint:has-text('reaches')")
    page.fill("#steer-prompt", "The cat")
    page.click("#steer-run")
    page.wait_for_selector(".side-by-side .column")
    columns = page.locator(".side-by-side .column")
    assert columns.count() == 2
    assert [columns.nth(i).locator("h4").inner_text() for i in range(2)] == ["Unedited",
                                                                             "Steered"]
    assert all(columns.nth(i).locator(".generation").inner_text().startswith("The cat")
               for i in range(2))
    assert "coef=40" in page.url and "prompt=The%20cat" in page.url
    snap(page, "steering")
    assert page.errors == []


def test_browse_latents_sorted_and_paged(browser):
    page = browser
    visit(page, "#/")
    page.locator(".dictionary").first.locator(".browse-link").click()
    ready(page, "#/d/run_a-sae")
    rows = page.locator(".latent-row")
    assert rows.count() == 25
    assert rows.first.locator(".tok-centre").count() == 1
    snap(page, "latents")
    page.select_option("#latent-sort", "id")
    ready(page, "#/d/run_a-sae?sort=id&page=0")
    assert page.locator(".latent-row").first.get_attribute("data-latent") == "0"
    page.locator(".next-page").click()
    ready(page, "#/d/run_a-sae?sort=id&page=1")
    first = int(page.locator(".latent-row").first.get_attribute("data-latent"))
    assert first >= 25
    assert page.errors == []


def test_graph_page_from_a_permalink_draws_every_node_and_edge(browser, server):
    page = browser
    data = server[1].graphs["random"]
    visit(page, "#/graph/random")
    page.wait_for_selector("#graph-svg .graph-node")
    svg = page.locator("#graph-svg")
    assert svg.locator(".graph-node").count() == len(data["nodes"])
    assert svg.locator("line.graph-edge").count() == len(data["edges"])
    negative = sum(e["weight"] < 0 for e in data["edges"])
    assert svg.locator("line.edge-neg").count() == negative
    assert svg.locator(".graph-token").count() == len(data["tokens"])
    # Width follows |weight|: the strongest edge is drawn the widest.
    widths = [float(w) for w in svg.locator("line.graph-edge").evaluate_all(
        "ls => ls.map(l => l.getAttribute('stroke-width'))")]
    strongest = max(range(len(data["edges"])), key=lambda i: abs(data["edges"][i]["weight"]))
    assert widths[strongest] == max(widths) == pytest.approx(5.0)
    top = max(data["nodes"], key=lambda n: n["influence"] if n["kind"] == "latent" else -1)
    node = svg.locator(f".graph-node[data-id='{top['id']}']")
    node.hover()
    assert page.locator(".graph-node-id").inner_text() == top["id"]
    node.click()
    assert page.url.endswith("#/graph/random?node=" + quote(top["id"], safe=""))
    assert page.locator(".graph-detail .graph-kind").inner_text() == "latent"
    assert "not served here" in page.locator(".graph-detail").inner_text()
    assert svg.locator("line.graph-edge.on").count() == sum(
        top["id"] in (e["source"], e["target"]) for e in data["edges"])
    snap(page, "graph")
    assert all(url.startswith(page.base) for url in page.urls), page.urls
    assert page.errors == []


def test_graph_latent_links_to_its_served_feature_page(browser, server):
    page = browser
    visit(page, "#/graphs")
    assert page.locator(".graph-row").count() == 2
    page.locator(".graph-row .result-link", has_text="chain").click()
    page.wait_for_selector("#graph-svg .graph-node")
    assert page.locator("#graph-svg .graph-node").count() == 4
    assert page.locator("#graph-svg line.graph-edge").count() == 3
    page.locator(".graph-node[data-id='L0/P2/F2']").click()
    link = page.locator(".graph-feature-link")
    assert link.get_attribute("href") == f"#/d/{SERVED_AS}/2"
    assert page.locator(".graph-detail .graph-activation").inner_text() != "0"
    snap(page, "graph-chain")
    link.click()
    ready(page, f"#/d/{SERVED_AS}/2")
    assert page.locator("h1").inner_text() == f"{SERVED_AS} · latent 2"
    page.go_back()
    ready(page, "#/graph/chain?node=L0%2FP2%2FF2")
    assert page.locator(".graph-node.selected").get_attribute("data-id") == "L0/P2/F2"
    assert page.errors == []
