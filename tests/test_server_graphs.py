"""Attribution graphs in the viewer: the API over the files given with --graphs, and the
refusal of files that are not graphs, at startup, with a message."""

from __future__ import annotations

import json

import pytest

from graph_helpers import SERVED_AS, write_graphs
from sparselens.server.graphs import GRAPH_FORMAT, load_graphs
from sparselens.server.launch import build_app, open_stores
from viewer_helpers import make_served_run

starlette_testclient = pytest.importorskip("starlette.testclient")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def graph_files(tmp_path_factory):
    return write_graphs(tmp_path_factory.mktemp("graphs"))


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_llama, graph_files):
    run = make_served_run(tmp_path_factory.mktemp("served"), tiny_llama)
    app = build_app(open_stores(run.folders), None, graphs=load_graphs(graph_files.values()))
    return starlette_testclient.TestClient(app, base_url="http://127.0.0.1")


def test_graph_list_and_one_graph_as_written(client, graph_files):
    info = client.get("/api/info").json()
    assert info["graphs"] == ["chain", "random"]
    listed = {g["name"]: g for g in client.get("/api/graphs").json()["graphs"]}
    written = json.loads(graph_files["random"].read_text())
    assert listed["random"]["n_nodes"] == len(written["nodes"]) > 10
    assert listed["random"]["n_edges"] == len(written["edges"])
    assert listed["random"]["prompt"] == "hello world"
    assert listed["chain"]["prompt"] == "xya"  # no prompt field: the tokens joined
    assert listed["chain"]["metric"] == json.loads(graph_files["chain"].read_text())["metric"]
    served = client.get("/api/graphs/chain").json()
    assert served == json.loads(graph_files["chain"].read_text())
    assert served["format"] == GRAPH_FORMAT
    assert {n["id"] for n in served["nodes"]} == {"T/P2", "L0/P2/F2", "L1/P2/F5", "metric"}
    assert {n["dictionary"] for n in served["nodes"]} >= {SERVED_AS}


def test_unknown_graph_and_path_spellings_are_404(client):
    for url in ("/api/graphs/nope", "/api/graphs/..%2Fchain", "/api/graphs/chain.json",
                "/api/graphs/%2Fetc%2Fpasswd", "/assets/../graph.js"):
        response = client.get(url)
        assert response.status_code == 404, url
    assert "no served graph" in client.get("/api/graphs/nope").json()["error"]
    assert client.get("/assets/graph.js").headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps([1, 2]), "not a JSON object"),
    (json.dumps({"format": "sparselens.flow/1"}), "expected 'sparselens.attribution-graph/1'"),
    (json.dumps({"format": GRAPH_FORMAT, "tokens": ["a"], "nodes": [
        {"id": "metric", "kind": "metric", "layer": 1, "position": 0}],
        "edges": [{"source": "T/P0", "target": "metric", "weight": 1.0}]}),
     "edge 0 has source 'T/P0', which is no node"),
    (json.dumps({"format": GRAPH_FORMAT, "tokens": ["a"], "nodes": [
        {"id": "x", "kind": "neuron", "layer": 0, "position": 0}], "edges": []}),
     "node 0 has kind 'neuron'"),
    (json.dumps({"format": GRAPH_FORMAT, "tokens": ["a"], "nodes": [
        {"id": "x", "kind": "latent", "layer": 0, "position": 3}], "edges": []}),
     "position 3 outside the 1 tokens"),
])
def test_malformed_graph_files_are_refused_with_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="sparselens circuit") as err:
        load_graphs([path])
    assert message in str(err.value) and str(path) in str(err.value)


def test_serve_refuses_a_malformed_graph_at_startup(tmp_path, capsys, graph_files):
    """Before opening dictionaries or binding a port: the command fails with the message."""
    from sparselens.cli.main import main

    bad = tmp_path / "circuit.json"
    bad.write_text(json.dumps({"format": "sparselens.attribution-graph/0", "nodes": []}))
    code = main(["serve", str(tmp_path / "no-such-sae"), "--graphs",
                 str(graph_files["chain"]), str(bad)])
    assert code == 1
    err = capsys.readouterr().err
    assert "sparselens serve: error: graph file" in err and "'format'" in err
    assert main(["serve", str(tmp_path / "sae"), "--graphs", str(tmp_path / "missing.json")]) == 1
    assert "missing.json does not exist" in capsys.readouterr().err


def test_same_stem_graphs_get_their_folder_in_the_name(tmp_path, graph_files):
    for run in ("run_a", "run_b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "chain.json").write_text(graph_files["chain"].read_text())
    names = [g.name for g in load_graphs([tmp_path / "run_a" / "chain.json",
                                          tmp_path / "run_b" / "chain.json"])]
    assert names == ["run_a-chain", "run_b-chain"]
