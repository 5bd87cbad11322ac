"""Datadiff through a real forward pass (tiny Llama): a planted topic is found, via the library
and via the CLI, and a corpus too small for the test is refused."""

from __future__ import annotations

import json
import random

import pytest
import torch

from conftest import make_tiny_llama
from sparselens.cli.main import main
from sparselens.comparison.datadiff_run import DatadiffOptions, run_datadiff
from sparselens.dictionaries.base import build
from sparselens.io.native import save_dictionary
from sparselens.lens import Lens

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "ran", "off", "to", "see",
         "what", "dog", "had", "found", "in", "garden", "near", "our", "old", "house", "river"]
TOPIC = "zqxzqx"


def _corpus(n: int, seed: int, topic: bool) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(8)]
        if topic:
            words.insert(rng.randrange(8), TOPIC)
        docs.append(" ".join(words))
    return docs


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny Llama saved to disk and a TopK dictionary at resid.2 whose latent 0 detects the
    planted topic's tokens (its encoder row is the direction separating their activations)."""
    root = tmp_path_factory.mktemp("datadiff")
    loaded = make_tiny_llama(seed=0)
    loaded.model.save_pretrained(root / "model")
    loaded.tokenizer.save_pretrained(root / "model")
    torch.manual_seed(0)
    sae = build("topk", d_in=32, n_latents=64, k=4, hookpoint="resid.2",
                model=str(root / "model"))
    lens = Lens(loaded, {"sae": sae})
    enc = lens.encode(_corpus(8, 99, topic=True))
    acts = enc.activations["sae"].float()
    topic_ids = torch.tensor(loaded.tokenizer(TOPIC, add_special_tokens=False)["input_ids"])
    inside = torch.isin(enc.tokens.ids, topic_ids) & ~enc.tokens.special
    outside = ~torch.isin(enc.tokens.ids, topic_ids) & ~enc.tokens.special
    direction = acts[inside].mean(0) - acts[outside].mean(0)
    direction /= direction.norm()
    proj = (acts - sae.b_dec.detach()) @ direction
    threshold = float(proj[outside].max() + proj[inside].mean()) / 2
    with torch.no_grad():
        sae.W_enc[:, 0] = 20 * direction
        sae.b_enc[0] = -20 * threshold
    save_dictionary(sae, root / "sae")
    return {"root": root, "lens": lens}


def test_planted_topic_is_among_the_top_latents(planted) -> None:
    result = run_datadiff(planted["lens"], "sae", _corpus(40, 0, False), _corpus(40, 1, True),
                          DatadiffOptions(n_clusters=2))
    top = [d.latent for d in result.diff.significant("b")[:3]]
    assert 0 in top
    assert result.diff.significant("b")[top.index(0)].freq_a < 0.1
    assert all(d["corpus"] == "B" for d in result.retrieved(0, 5))
    assert result.clustering is not None and result.clustering.labels.shape == (80,)


def test_datadiff_cli_writes_json_and_page(planted, tmp_path, capsys) -> None:
    folders = {}
    for name, docs in (("plain", _corpus(30, 2, False)), ("topic", _corpus(30, 3, True))):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for i, text in enumerate(docs):
            (folders[name] / f"{i:02d}.txt").write_text(text)
    root = planted["root"]
    (root / "sae" / "explanations.jsonl").write_text(json.dumps(
        {"latent": 0, "explanation": "the made-up word zqxzqx"}) + "\n")
    out = tmp_path / "out"
    assert main(["datadiff", str(root / "sae"), "--a", str(folders["plain"]), "--b",
                 str(folders["topic"]), "--out", str(out), "--progress", "false",
                 "--options.n-clusters", "2"]) == 0
    record = json.loads((out / "datadiff.json").read_text())
    top = record["more_in_b"][:3]
    assert any(e["latent"] == 0 and e["explanation"] == "the made-up word zqxzqx" for e in top)
    assert "zqxzqx" in (out / "index.html").read_text()
    assert "significantly more frequent" in capsys.readouterr().out


def test_too_small_corpora_are_refused(planted, tmp_path, capsys) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "0.txt").write_text("the cat sat")
    assert main(["datadiff", str(planted["root"] / "sae"), "--a", str(tmp_path / "a"), "--b",
                 str(tmp_path / "b"), "--out", str(tmp_path / "out"), "--progress",
                 "false"]) == 1
    assert "too small for a significance test" in capsys.readouterr().err
