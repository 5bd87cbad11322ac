"""The compare page's API: records written by `sparselens compare` served with links to the
served dictionaries, unknown names 404, and files that are not compare records refused at
startup with a message."""

from __future__ import annotations

import json

import pytest

from sparselens.comparison.compare import CompareOptions, compare_dictionaries
from sparselens.comparison.compare_output import write_comparison
from sparselens.io.detect import load_any
from sparselens.server.comparisons import load_comparisons
from sparselens.server.launch import build_app, open_stores
from viewer_helpers import make_served_run

starlette_testclient = pytest.importorskip("starlette.testclient")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("served")
    run = make_served_run(root, tiny_llama)
    a, b = (load_any(f) for f in run.folders)
    result = compare_dictionaries(a, b, (str(run.folders[0]), str(run.folders[1])),
                                  options=CompareOptions(n_permutations=0))
    write_comparison(result, root / "seeds")
    app = build_app(open_stores(run.folders), None,
                    comparisons=load_comparisons([root / "seeds"]))
    client = starlette_testclient.TestClient(app, base_url="http://127.0.0.1")
    return client, result, json.loads((root / "seeds" / "compare.json").read_text())


def test_comparison_listed_and_served_with_links(served) -> None:
    client, result, written = served
    assert client.get("/api/info").json()["comparisons"] == ["seeds"]
    (listed,) = client.get("/api/comparisons").json()["comparisons"]
    assert listed["name"] == "seeds"
    assert listed["pwmcc"]["decoder_matching"] == pytest.approx(result.decoder.pwmcc)
    data = client.get("/api/comparisons/seeds").json()
    # both dictionaries are served, so each side links to its served name
    names = {s["name"] for s in client.get("/api/info").json()["dictionaries"]}
    assert set(data["served"].values()) == names
    assert data["decoder_matching"]["histogram"] == written["decoder_matching"]["histogram"]
    pairs = data["pairs"]["decoder"]
    assert len(pairs["a"]) == result.decoder.rows.size
    assert pairs["similarity"] == sorted(pairs["similarity"], reverse=True)
    assert data["novel"] == written["novel"]
    assert client.get("/assets/compare.js").headers["content-type"].startswith("text/javascript")
    page = client.get("/").text
    assert "/assets/compare.js" in page and "#/compares" in page


def test_unknown_comparison_is_404(served) -> None:
    client, _, _ = served
    for url in ("/api/comparisons/nope", "/api/comparisons/..%2Fseeds",
                "/api/comparisons/seeds.json"):
        assert client.get(url).status_code == 404, url
    assert "no served comparison" in client.get("/api/comparisons/nope").json()["error"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps([1]), "not a JSON object"),
    (json.dumps({"schema": "sparselens.datadiff"}), "expected 'sparselens.compare'"),
    (json.dumps({"schema": "sparselens.compare", "dictionaries": {"A": "x"}}),
     "does not name A and B"),
])
def test_bad_files_are_refused_at_startup(tmp_path, content, message) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_comparisons([path])
    with pytest.raises(ValueError, match="does not exist"):
        load_comparisons([tmp_path / "missing"])
