"""The viewer's JSON API and its security rules, on a tiny run built in code (TestClient)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from sparselens.server.launch import build_app, is_loopback, open_stores
from sparselens.server.limits import Limits
from viewer_helpers import HOOK, N_LATENTS, SCRIPT_TOKEN, make_served_run, top_token_of

starlette_testclient = pytest.importorskip("starlette.testclient")


def local_client(app):
    """A TestClient addressing the app as http://127.0.0.1 (the Host a local browser sends;
    the app refuses other Host headers)."""
    return starlette_testclient.TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama, one_thread):
    return make_served_run(tmp_path_factory.mktemp("served"), tiny_llama)


@pytest.fixture(scope="module")
def stores(run):
    return open_stores(run.folders)


@pytest.fixture(scope="module")
def client(stores, run):
    return local_client(build_app(stores, run.model))


@pytest.fixture(scope="module")
def bare_client(stores):
    """No model loaded."""
    return local_client(build_app(stores, None))


def examples_of(run, i: int = 0):
    from sparselens.interpretation.examples import FeatureExamples

    return FeatureExamples.load(run.folders[i].parent / "report")


def test_info_names_the_dictionaries_and_the_model(client):
    info = client.get("/api/info").json()
    assert [d["name"] for d in info["dictionaries"]] == ["run_a-sae", "run_b-sae"]
    assert info["model"] == "tiny-llama-0"
    assert all(d["has_examples"] and d["has_contexts"] for d in info["dictionaries"])
    assert info["dictionaries"][0]["n_explained"] == 2


def test_overview_metrics_histogram_curves_and_pareto(client, run):
    data = client.get("/api/overview").json()
    first = data["dictionaries"][0]
    counts = examples_of(run).counts
    assert first["density"]["dead"] == int((counts == 0).sum())
    assert sum(first["density"]["counts"]) == int((counts > 0).sum())
    assert first["density"]["n_tokens"] == examples_of(run).n_tokens
    assert {c["label"] for c in first["headline"]} >= {"FVU", "L0", "Loss recovered"}
    titles = [p["title"] for p in first["curves"]["panels"]]
    assert titles == ["Loss", "FVU", "L0", "Dead latents (%)"]
    assert first["curves"]["panels"][0]["points"][0] == [512.0, 2.0]
    pareto = {p["name"]: p for p in data["pareto"]}
    assert pareto["run_a-sae"]["fvu"] == 0.31 and pareto["run_b-sae"]["l0"] == 8.0
    assert pareto["run_b-sae"]["loss_recovered"] == pytest.approx(0.68)


def test_feature_page_examples_match_the_store_and_the_tokens(client, run):
    examples = examples_of(run)
    latent = int(examples.counts.argmax())
    data = client.get(f"/api/d/run_a-sae/feature/{latent}").json()
    assert data["stats"]["count"] == int(examples.counts[latent])
    assert data["stats"]["density"] == pytest.approx(
        float(examples.counts[latent]) / examples.n_tokens)
    top = data["top"]
    assert len(top) == int(examples.top.valid[latent].sum())
    text_of = run.model.tokenizer.convert_ids_to_tokens
    for row, seq, pos, act in zip(top, examples.top.seq_ids[latent],
                                  examples.top.positions[latent],
                                  examples.top.activations[latent]):
        assert (row["seq"], row["pos"]) == (int(seq), int(pos))
        assert row["act"] == pytest.approx(float(act), rel=1e-3)
        assert row["acts"][row["centre"]] == row["act"]
        start = int(pos) - row["centre"]
        ids = run.tokens[int(seq), start:start + len(row["tokens"])].tolist()
        piece = text_of([ids[row["centre"]]])[0]
        assert row["tokens"][row["centre"]] in (piece.replace("Ġ", " ").replace("Ċ", "\n"),
                                                SCRIPT_TOKEN)
        assert len(row["tokens"]) <= 5 + 1 + 3
    # Windows: neighbours carry the latent's own activation (collected by collect_windows).
    window = examples.top.windows[latent, 0]
    first = top[0]
    offset = 5 - first["centre"]
    assert first["acts"] == pytest.approx([round(float(v), 4) if abs(v) > 0 else 0.0
                                           for v in window[offset:offset + len(first["acts"])]],
                                          rel=1e-3, abs=1e-6)
    groups = data["quantiles"]
    assert [g["bin"] for g in groups] == sorted((g["bin"] for g in groups), reverse=True)
    assert sum(len(g["examples"]) for g in groups) == int(examples.samples.valid[latent].sum())
    hist = data["histogram"]
    assert sum(hist["counts"]) == pytest.approx(data["stats"]["count"], rel=1e-3)


def test_feature_explanations_are_read_and_bad_lines_skipped(client, stores):
    data = client.get("/api/d/run_a-sae/feature/3").json()
    assert data["explanations"][0]["text"] == "the word Paris and <b>other</b> capitals"
    assert data["explanations"][0]["scores"] == {"detection": 0.81, "fuzzing": 0.74}
    assert stores[0].explanations.skipped == 1
    assert client.get("/api/d/run_a-sae/feature/4").json()["explanations"] == []
    nested = client.get("/api/d/run_a-sae/feature/5").json()["explanations"][0]
    assert nested["scores"] == {"fuzzing": 0.7} and nested["source"] == "qwen"


def test_unknown_dictionary_latent_or_route_is_404(client):
    assert client.get("/api/d/nope/feature/1").status_code == 404
    assert client.get(f"/api/d/run_a-sae/feature/{N_LATENTS}").status_code == 404
    assert client.get("/api/d/run_a-sae/feature/-1").status_code == 404
    assert client.get("/api/d/run_a-sae/feature/abc").status_code == 404
    for path in ("/etc/passwd", "/api/nothing", "/assets/../app.py", "/assets/%2e%2e/app.py",
                 "/assets/..%2fapp.py", "/assets/app.py", "/assets/index.html",
                 "/assets/%2e%2e%2f%2e%2e%2fpyproject.toml", "/d/run_a-sae/config.json",
                 "/run_a-sae/weights.safetensors"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"sparselens" not in response.content or path == "/assets/index.html"


def test_similar_latents_by_decoder_cosine(client, stores):
    latent = 7
    data = client.get(f"/api/d/run_a-sae/feature/{latent}/similar").json()["similar"]
    assert [g["dictionary"] for g in data] == ["run_a-sae", "run_b-sae"]
    for group, store in zip(data, stores):
        w = store.module().W_dec.detach()
        w = w / w.norm(dim=1, keepdim=True)
        cos = w @ (stores[0].module().W_dec[latent].detach() /
                   stores[0].module().W_dec[latent].norm())
        if store is stores[0]:
            cos[latent] = -2
        expected = cos.topk(10)
        assert [e["latent"] for e in group["latents"]] == expected.indices.tolist()
        assert [e["cosine"] for e in group["latents"]] == pytest.approx(
            expected.values.tolist(), abs=1e-4)


def test_logit_lens_is_the_unembedding_of_the_decoder_direction(client, run, stores):
    data = client.get("/api/d/run_b-sae/feature/2/logit-lens").json()
    logits = run.model.model.get_output_embeddings().weight @ stores[1].module().W_dec[2]
    top = logits.topk(10)
    assert [e["value"] for e in data["top"]] == pytest.approx(top.values.tolist(), abs=1e-4)
    texts = [e["token"] for e in data["bottom"]]
    assert len(texts) == 10 and data["bottom"][0]["value"] == pytest.approx(
        float(logits.min()), abs=1e-4)


def test_search_by_id_token_and_explanation(client, run):
    hits = client.get("/api/search", params={"q": "#5"}).json()["results"]
    assert [(h["dictionary"], h["latent"]) for h in hits] == [("run_a-sae", 5), ("run_b-sae", 5)]
    assert hits[0]["explanation"] == "Python code indentation"
    examples = examples_of(run)
    latent = int(examples.counts.argmax())
    token = top_token_of(run.folders[0].parent / "report", latent, run.tokens)
    text = run.model.tokenizer.convert_ids_to_tokens([token])[0].replace("Ġ", " ")
    hits = client.get("/api/search", params={"q": text, "d": "run_a-sae"}).json()["results"]
    assert latent in [h["latent"] for h in hits if h["kind"] == "token"]
    assert all(h["dictionary"] == "run_a-sae" for h in hits)
    hits = client.get("/api/search", params={"q": "other CAPITALS"}).json()["results"]
    assert {(h["latent"], h["kind"]) for h in hits} == {(3, "explanation")}
    assert client.get("/api/search", params={"q": "x" * 201}).status_code == 400
    assert client.get("/api/search", params={"q": ""}).json()["results"] == []


def test_script_token_is_data_not_markup(client, run):
    """The index gives '~' a display text full of markup; the API returns it verbatim as a
    JSON string, and the front end never parses server text as HTML."""
    hits = client.get("/api/search", params={"q": SCRIPT_TOKEN}).json()["results"]
    assert hits, "some latent fires hardest on the '~' token"
    page = client.get(f"/api/d/{hits[0]['dictionary']}/feature/{hits[0]['latent']}").json()
    assert any(SCRIPT_TOKEN in row["tokens"] for row in page["top"])
    script = client.get("/assets/viewer.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


def test_every_response_has_the_security_headers(client):
    for path in ("/", "/assets/viewer.js", "/api/info", "/nothing"):
        headers = client.get(path).headers
        assert headers["content-security-policy"].startswith("default-src 'self'")
        assert headers["x-content-type-options"] == "nosniff"
    page = client.get("/").text
    assert "<script src=\"/assets/viewer.js\"" in page and "http" not in page.split("<body")[0]


def test_foreign_host_header_is_refused(client):
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/info", headers={"host": "127.0.0.1:8000"}).status_code == 200


def test_request_bodies_texts_and_lengths_are_bounded(client):
    big = {"text": "a" * 70_000, "dictionary": "run_a-sae"}
    assert client.post("/api/playground", json=big).status_code == 413
    chunked = iter([b'{"text": "' + b"a" * 40_000, b"a" * 40_000 + b'"}'])  # no Content-Length
    assert client.post("/api/playground", content=chunked).status_code == 413
    lim = Limits()
    too_long = {"text": "a" * (lim.max_text_chars + 1), "dictionary": "run_a-sae"}
    response = client.post("/api/playground", json=too_long)
    assert response.status_code == 400 and "4000" in response.json()["error"]
    assert client.post("/api/playground", content=b"[1, 2]").status_code == 400
    assert client.post("/api/playground", content=b"not json").status_code == 400
    bad_latent = {"text": "hi", "dictionary": "run_a-sae", "latent": N_LATENTS}
    assert client.post("/api/playground", json=bad_latent).status_code == 400
    steer = {"prompt": "Hi", "edits": [{"dictionary": "run_a-sae", "latent": 1, "coef": 4}]}
    assert client.post("/api/steer", json=steer | {"max_new_tokens": 65}).status_code == 400
    assert client.post("/api/steer", json=steer | {"edits": []}).status_code == 400
    nan = {"dictionary": "run_a-sae", "latent": 1, "coef": float("inf")}
    assert client.post("/api/steer", content=json.dumps(steer | {"edits": [nan]})
                       ).status_code == 400
    assert client.get("/api/playground").status_code == 405


def test_without_a_model_the_playgrounds_say_what_to_do(bare_client):
    response = bare_client.post("/api/playground", json={"text": "hi", "dictionary":
                                                         "run_a-sae", "latent": 1})
    assert response.status_code == 503 and "--model" in response.json()["error"]
    assert bare_client.get("/api/d/run_a-sae/feature/1/logit-lens").status_code == 503
    assert bare_client.get("/api/d/run_a-sae/feature/1").status_code == 200


def test_playground_codes_are_the_dictionary_codes_of_the_model_run(client, run, stores):
    from sparselens.models.hookpoints import capture, resolve

    text = "The capital of France is Paris."
    data = client.post("/api/playground", json={"text": text, "dictionary": "run_b-sae",
                                                "latent": 4}).json()
    tok = run.model.tokenizer
    ids = tok(text, return_tensors="pt").input_ids
    assert len(data["tokens"]) == ids.shape[1]
    hp = resolve(run.model.model, HOOK)[0]
    codes = stores[1].module().encode(capture(run.model.model, [hp], input_ids=ids)[hp][0])
    special = torch.tensor(data["special"])
    codes[special] = 0
    assert data["acts"] == pytest.approx(codes[:, 4].tolist(), abs=1e-4)
    position = int(codes.count_nonzero(1).argmax())
    fired = data["firing"][position]
    assert [f["latent"] for f in fired] == codes[position].topk(len(fired)).indices.tolist()
    short = local_client(build_app(stores, run.model,
                                                      limits=Limits(max_tokens=16)))
    long = {"text": "word " * 5, "dictionary": "run_b-sae", "latent": 4}
    response = short.post("/api/playground", json=long)
    assert response.status_code == 400 and "at most 16" in response.json()["error"]
    beyond_context = {"text": "word " * 30, "dictionary": "run_b-sae", "latent": 4}
    response = client.post("/api/playground", json=beyond_context)
    assert response.status_code == 400 and "context" in response.json()["error"]


def test_steering_generates_side_by_side(client):
    body = {"prompt": "The cat", "max_new_tokens": 5,
            "edits": [{"dictionary": "run_a-sae", "latent": 2, "coef": 50.0}]}
    data = client.post("/api/steer", json=body).json()
    assert data["prompt"] == "The cat" and isinstance(data["plain"], str)
    again = client.post("/api/steer", json=body | {"edits": [body["edits"][0] | {"coef": 0.0}]})
    assert again.json()["steered"] == again.json()["plain"]


def test_symlinks_out_of_the_dictionary_folder_are_not_served(run, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"fvu": 123.0}))
    folder = tmp_path / "sae"
    folder.mkdir()
    for name in os.listdir(run.folders[0]):
        if name not in ("eval.json", "explanations.jsonl"):
            (folder / name).write_bytes((run.folders[0] / name).read_bytes())
    (folder / "eval.json").symlink_to(secret)
    (folder / "explanations.jsonl").symlink_to(secret)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = open_stores([folder], examples=[run.folders[0].parent / "report"])[0]
        metrics = store.metrics()
    assert metrics == {} and len(store.explanations) == 0
    assert any("outside" in str(w.message) for w in caught)


def test_stale_viewer_index_is_not_used(run, tmp_path):
    from sparselens.server.index import ViewerIndex

    report = run.folders[0].parent / "report"
    store_file = report / "examples.safetensors"
    assert ViewerIndex.open_if_current(store_file) is not None
    copy = tmp_path / "examples.safetensors"
    copy.write_bytes(store_file.read_bytes())
    (tmp_path / "viewer_index.safetensors").write_bytes(
        (report / "viewer_index.safetensors").read_bytes())
    assert ViewerIndex.open_if_current(copy) is None  # another store: rebuilt, not trusted


def test_example_store_of_another_width_is_refused(run, tmp_path):
    from sparselens.dictionaries import build
    from sparselens.io.native import save_dictionary

    other = save_dictionary(build("topk", d_in=32, n_latents=N_LATENTS + 1, k=2), tmp_path / "x")
    with pytest.raises(ValueError, match="describes 48 latents"):
        open_stores([other], examples=[run.folders[0].parent / "report"])


def test_loopback_detection_and_the_exposure_warning(monkeypatch, stores):
    import uvicorn

    from sparselens.server.launch import run_server

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    with pytest.warns(UserWarning, match="no authentication"):
        run_server(build_app(stores, host="0.0.0.0"), host="0.0.0.0", port=1234)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_server(build_app(stores), port=1235)
    assert [c["host"] for c in calls] == ["0.0.0.0", "127.0.0.1"]


def test_cli_defaults_to_loopback_and_explains_missing_arguments(capsys):
    from sparselens.cli.commands.serve import Config
    from sparselens.cli.main import main

    assert Config().host == "127.0.0.1"
    assert main(["serve"]) == 1
    assert "give the dictionary folders" in capsys.readouterr().err
    assert main(["serve", str(Path("/nonexistent/sae"))]) == 1
    assert "not a dictionary folder" in capsys.readouterr().err


def test_an_exact_histogram_in_the_store_is_used(run, tmp_path):
    """Stores that count a per-latent |activation| histogram (and describe its edges in
    examples.json) get it drawn as counted, on a log axis, trimmed to the bins in use."""
    from safetensors.torch import load_file, save_file

    report = run.folders[0].parent / "report"
    tensors = load_file(report / "examples.safetensors")
    histogram = torch.zeros(N_LATENTS, 5, dtype=torch.long)
    histogram[3] = torch.tensor([2, 0, 7, 1, 0])
    tensors["histogram"] = histogram
    save_file(tensors, tmp_path / "examples.safetensors", metadata={"hookpoint": HOOK,
              "n_tokens": "100", "window": "[5, 3]"})
    (tmp_path / "examples.json").write_text(json.dumps({"histogram_edges": [0.01, 0.1, 1, 10]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no cache to build the index from: no token text
        store = open_stores([run.folders[0]], examples=[tmp_path])[0]
    client = local_client(build_app([store]))
    hist = client.get(f"/api/d/{store.name}/feature/3").json()["histogram"]
    assert hist["log"] and hist["counts"] == [7, 1] and hist["edges"] == [-1.0, 0.0, 1.0]
    assert (hist["below"], hist["above"]) == (2, 0)
    page = client.get(f"/api/d/{store.name}/feature/3").json()
    assert page["top"] and page["top"][0]["tokens"] == []


def test_a_saelens_checkpoint_is_served_from_its_loaded_module(run, stores, tmp_path):
    """Other formats are read through load_any (whole); the pages work the same."""
    from sparselens.io.saelens_export import save_saelens

    folder = save_saelens(stores[0].module(), tmp_path / "saelens_sae")
    foreign = open_stores([folder], examples=[run.folders[0].parent / "report"])[0]
    assert not foreign.meta["native"] and foreign.n_latents == N_LATENTS
    client = local_client(build_app([foreign, stores[0]], run.model))
    page = client.get(f"/api/d/{foreign.name}/feature/7").json()
    native = client.get("/api/d/run_a-sae/feature/7").json()
    assert page["top"] == native["top"] and page["stats"] == native["stats"]
    similar = client.get(f"/api/d/{foreign.name}/feature/7/similar").json()["similar"]
    same = {e["latent"]: e["cosine"] for e in similar[1]["latents"]}
    assert same[7] == pytest.approx(1.0, abs=1e-4)  # the same decoder, served twice


def test_latent_list_sorts_pages_and_hides_dead(client, run):
    examples = examples_of(run)
    counts = examples.counts
    data = client.get("/api/d/run_a-sae/latents", params={"sort": "density", "size": 5}).json()
    assert data["total"] == int((counts > 0).sum())
    assert [r["latent"] for r in data["rows"]] == torch.argsort(-counts.double(),
                                                                stable=True)[:5].tolist()
    row = data["rows"][0]
    assert row["example"]["act"] == pytest.approx(float(examples.top.activations[row["latent"], 0]),
                                                  rel=1e-3)
    second = client.get("/api/d/run_a-sae/latents", params={"sort": "density", "size": 5,
                                                             "page": 1}).json()
    assert not {r["latent"] for r in second["rows"]} & {r["latent"] for r in data["rows"]}
    every = client.get("/api/d/run_a-sae/latents", params={"sort": "id", "dead": "1",
                                                            "size": 100}).json()
    assert [r["latent"] for r in every["rows"]] == list(range(N_LATENTS))
    by_max = client.get("/api/d/run_a-sae/latents", params={"sort": "max", "size": 3}).json()
    assert by_max["rows"][0]["max"] == pytest.approx(float(examples.max_activation.max()),
                                                     rel=1e-4)
    for bad in ({"sort": "nope"}, {"size": "0"}, {"size": "101"}, {"page": "-1"},
                {"page": "x"}):
        assert client.get("/api/d/run_a-sae/latents", params=bad).status_code == 400


def test_index_built_from_tokens_the_store_carries(run, tmp_path):
    """An example store that embeds its token table needs no cache: the index is built from
    it on open (with the tokenizer given)."""
    from safetensors.torch import load_file, save_file

    from viewer_helpers import ScriptTokenizer

    report = run.folders[0].parent / "report"
    tensors = load_file(report / "examples.safetensors") | {"tokens": run.tokens}
    save_file(tensors, tmp_path / "examples.safetensors", metadata={"hookpoint": HOOK,
              "n_tokens": "846", "window": "[5, 3]"})
    store = open_stores([run.folders[0]], examples=[tmp_path],
                        tokenizer=ScriptTokenizer(run.model.tokenizer))[0]
    assert (tmp_path / "viewer_index.safetensors").exists() and store.index is not None
    client = local_client(build_app([store]))
    mine = client.get(f"/api/d/{store.name}/feature/7").json()["top"]
    reference = local_client(build_app(open_stores(run.folders[:1])))
    assert mine == reference.get("/api/d/sae/feature/7").json()["top"]
    with pytest.warns(UserWarning, match="no tokenizer"):
        (tmp_path / "viewer_index.safetensors").unlink()
        assert open_stores([run.folders[0]], examples=[tmp_path])[0].index is None


def test_the_fast_byte_level_check_agrees_with_the_full_serialisation(run):
    """`token_text` reads byte-level from the decoder's state (microseconds) instead of
    serialising the whole tokenizer (seconds on gemma): both must say the same."""
    from sparselens.interpretation import token_text

    tokenizer = run.model.tokenizer
    assert token_text._byte_level_from_decoder(tokenizer) is True
    assert token_text._byte_level_from_json(tokenizer) is True
    assert token_text.is_byte_level(tokenizer)


def test_example_stores_are_looked_up_only_where_the_pipeline_writes_them(tmp_path):
    from sparselens.server.files import example_store_candidates

    run = tmp_path / "runs" / "x"
    assert list(example_store_candidates(run / "sae")) == [
        run / "sae", run / "sae" / "report", run / "sae" / "report", run / "report",
        run / "sae" / "examples"]
    elsewhere = tmp_path / "my_dictionary"  # not a run layout: the parent's report/ is not it
    assert tmp_path / "report" not in list(example_store_candidates(elsewhere))
    step = run / "sae" / "checkpoints" / "step_100"
    assert run / "sae" / "report" in list(example_store_candidates(step))


def test_token_lookup_exact_first_then_case_variants(stores):
    from sparselens.server.index import find_token_entries

    index = stores[0].index
    texts = [index.text_of(i) for i in find_token_entries(index, "P")]
    assert texts[0] == "P" and "p" in texts and all(t.strip().lower() == "p" for t in texts)
    assert find_token_entries(index, "no such token") == []
    assert find_token_entries(index, "") == []


def test_search_by_meaning_uses_the_explanations_embedding_index(tmp_path, tiny_llama):
    """`sparselens explain` writes an embedding index beside the explanations; the viewer's
    search then also finds latents whose explanation means what the query says, without
    sharing its words."""
    from sparselens.interpretation.search import ExplanationIndex

    run = make_served_run(tmp_path, tiny_llama)
    ExplanationIndex.build({3: "the word Paris and other capitals",
                            5: "Python code indentation",
                            7: "days of the week such as Monday"}).save(
        _mkdir(run.folders[0] / "explanations"))
    client = local_client(build_app(open_stores(run.folders), None))
    hits = client.get("/api/search", params={"q": "weekend", "d": "run_a-sae"}).json()
    meaning = [h for h in hits["results"] if h["kind"] == "meaning"]
    assert meaning and meaning[0]["latent"] == 7
    capitals = client.get("/api/search", params={"q": "cities of Europe"}).json()["results"]
    assert [h["latent"] for h in capitals if h["kind"] == "meaning"][0] == 3


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path
