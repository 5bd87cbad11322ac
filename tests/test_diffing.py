"""Model diffing: relative decoder norms, Latent Scaling, and `sparselens diff` end to end on a
tiny Llama against a copy of it fine-tuned on text the base could not read."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch

from conftest import fine_tune_embedding_offset, make_tiny_llama
from sparselens.cli.main import main
from sparselens.data.batch import ActivationBatch
from sparselens.data.corpus import CorpusConfig
from sparselens.dictionaries import build
from sparselens.evaluation.diffing import (
    DiffThresholds,
    LatentScalingStats,
    decoder_cosine,
    diff_latents,
    latent_kinds,
    relative_norm,
)
from sparselens.pipelines.diff import DiffConfig, diff

KEY = "A/h+B/h"
WIDTH = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def test_relative_norm_and_kinds() -> None:
    norms = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, 0.5], [0.02, 1.0]])
    rel = relative_norm(norms)
    torch.testing.assert_close(rel, torch.tensor([0.0, 1.0, 0.5, 0.25, 0.99]))
    assert latent_kinds(rel, DiffThresholds()) == ["a_only", "b_only", "shared", "between",
                                                   "b_only"]
    with pytest.raises(ValueError, match="two sources"):
        relative_norm(torch.ones(3, 3))
    with pytest.raises(ValueError, match="thresholds.specific"):
        DiffThresholds(specific=0.7)
    with pytest.raises(ValueError, match="present_ratio"):
        DiffThresholds(present_ratio=0.0)


def test_latent_scaling_matches_the_least_squares_definition() -> None:
    gen = torch.Generator().manual_seed(0)
    n, m, s, d = 300, 3, 2, 5
    x, recon = torch.randn(n, s, d, generator=gen), torch.randn(n, s, d, generator=gen)
    codes = torch.relu(torch.randn(n, 6, generator=gen))
    latents = torch.tensor([1, 4, 5])
    own = torch.randn(m, s, d, generator=gen)
    directions = torch.randn(m, d, generator=gen)
    stats = LatentScalingStats(latents, s, d, torch.device("cpu"))
    for rows in torch.arange(n).split(70):  # streamed in batches
        stats.update(x[rows], recon[rows], codes[rows])
    beta_error, beta_recon = stats.betas(directions, own)
    for i, j in enumerate(latents.tolist()):
        f = codes[:, j].double()
        v = directions[i].double()
        for source in range(s):
            y_error = (x[:, source] - recon[:, source]).double() + f[:, None] * own[i, source]
            fitted = torch.linalg.lstsq((f[:, None] * v).reshape(-1, 1),
                                        y_error.reshape(-1, 1)).solution.item()
            assert beta_error[i, source].item() == pytest.approx(fitted, rel=1e-6)
            fitted = torch.linalg.lstsq((f[:, None] * v).reshape(-1, 1),
                                        recon[:, source].double().reshape(-1, 1)).solution.item()
            assert beta_recon[i, source].item() == pytest.approx(fitted, rel=1e-6)


def _planted_crosscoder():
    """A crosscoder whose codes are exactly the planted ones: four orthonormal directions read
    from model B; latents 0 and 1 write only to B, latents 2 and 3 to both."""
    cc = build("crosscoder", d_in=2 * WIDTH, n_latents=4, k=4, selection="topk",
               normalize_sources=False, hookpoint=KEY)
    basis = torch.eye(WIDTH)[:4]
    with torch.no_grad():
        cc.W_enc.zero_()
        cc.W_enc[WIDTH:] = basis.T
        cc.b_enc.zero_()
        cc.b_dec.zero_()
        decoder = torch.zeros(4, 2, WIDTH)
        decoder[:, 1] = basis
        decoder[2:, 0] = basis[2:]
        cc.W_dec.copy_(decoder.flatten(1))
    return cc.eval(), basis


def test_latent_scaling_tells_complete_shrinkage_from_a_truly_specific_latent() -> None:
    """Latent 0 looks B-only by its decoder, but 0.7 of its direction is in A's activations
    (the decoder shrank); latent 1 is really absent from A."""
    cc, basis = _planted_crosscoder()
    gen = torch.Generator().manual_seed(1)
    f = torch.rand(512, 4, generator=gen) * (torch.rand(512, 4, generator=gen) < 0.3)
    x_b = f @ basis
    x_a = 0.7 * f[:, :1] * basis[0] + f[:, 2:] @ basis[2:]
    batches = [ActivationBatch(acts={KEY: torch.cat([x_a, x_b], 1)[rows]},
                               token_ids=rows, seq_ids=rows, positions=rows)
               for rows in torch.arange(512).split(100)]
    diff = diff_latents(cc, batches, KEY)
    assert diff.kinds == ["b_only", "b_only", "shared", "shared"]
    records = {r["latent"]: r for r in diff.records()}
    assert set(records) == {0, 1}
    assert records[0]["beta_error"] == pytest.approx([0.7, 1.0], abs=1e-5)
    assert records[0]["nu_error"] == pytest.approx(0.7, abs=1e-5)
    assert records[0]["only_apparently_specific"]
    assert records[1]["nu_error"] == pytest.approx(0.0, abs=1e-5)
    assert not records[1]["only_apparently_specific"]
    assert records[1]["model"] == "B/h"
    torch.testing.assert_close(diff.density, (f != 0).double().mean(0))
    with pytest.raises(ValueError, match="no activations for hookpoint .other."):
        diff_latents(cc, batches, "other")


def test_changed_latents_are_shared_ones_whose_directions_differ() -> None:
    """Latent 3 writes to both models with equal norms but in orthogonal directions (the
    concept is represented differently): changed. Latent 2 agrees; latents 0 and 1 are
    B-only (specific, never changed)."""
    cc, basis = _planted_crosscoder()
    with torch.no_grad():
        decoder = cc.decoder_by_source().clone()
        decoder[3, 0] = basis[0]  # A writes latent 3 along another direction than B does
        cc.W_dec.copy_(decoder.flatten(1))
    torch.testing.assert_close(decoder_cosine(decoder), torch.tensor([torch.nan, torch.nan,
                                                                     1.0, 0.0]), equal_nan=True)
    gen = torch.Generator().manual_seed(2)
    f = torch.rand(400, 4, generator=gen) * (torch.rand(400, 4, generator=gen) < 0.5)
    x = torch.cat([f @ basis, f @ basis], 1)
    batch = ActivationBatch(acts={KEY: x}, token_ids=torch.arange(400),
                            seq_ids=torch.arange(400), positions=torch.arange(400))
    diff = diff_latents(cc, [batch], KEY)
    assert diff.kinds == ["b_only", "b_only", "shared", "shared"] and diff.changed == [3]
    changed = diff.changed_records()
    assert [r["latent"] for r in changed] == [3] and changed[0]["decoder_cosine"] == 0.0
    assert changed[0]["firings"] == int((f[:, 3] > 0).sum())
    assert diff.counts()["changed"] == 1
    strict = diff_latents(cc, [batch], KEY, DiffThresholds(changed_cosine=-0.5))
    assert strict.changed == []
    with pytest.raises(ValueError, match="changed_cosine"):
        DiffThresholds(changed_cosine=1.5)


def test_diff_needs_two_sources() -> None:
    cc = build("crosscoder", d_in=3 * WIDTH, n_latents=8, k=2, hookpoint="a+b+c")
    with pytest.raises(ValueError, match="two sources"):
        diff_latents(cc, [], "a+b+c")


# ---- end to end: a tiny base model and a copy fine-tuned on text it could not read ----

WORDS = ["the", "a", "cat", "dog", "runs", "sees", "small", "big", "red", "blue", "house", "tree",
         "river", "stone", "walks", "over", "under", "and", "then"]
LOWER, UPPER = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _documents(seed: int = 0) -> tuple[list[str], list[str]]:
    """Lower-case word lists, and upper-case ones (the distinctive corpus)."""
    rng = random.Random(seed)
    words = [" ".join(rng.choice(WORDS) for _ in range(60)) + "." for _ in range(100)]
    return words[:80], [text.upper() for text in words[80:]]


@pytest.fixture(scope="module")
def diff_setup(tmp_path_factory) -> dict[str, Path]:
    """Model A cannot tell upper from lower case: its upper-case letters carry their lower-case
    twins' embeddings (like letters a model never learned apart), so upper-case text looks to
    A exactly like lower-case text. Model B is A fine-tuned on upper-case text (an offset on
    the upper-case embeddings): B differs from A there and only there."""
    root = tmp_path_factory.mktemp("diff")
    base = make_tiny_llama(seed=0)
    tokenizer = base.tokenizer
    lower, upper = ([tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in letters]
                    for letters in (LOWER, UPPER))
    embedding = base.model.get_input_embeddings().weight
    embedding[upper] = embedding[lower].clone()
    plain, shouted = _documents()
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text)["input_ids"][:31]]
                        for text in shouted])
    offset = fine_tune_embedding_offset(base.model, upper, ids, steps=100, lr=0.3,
                                        batch_size=8)
    tuned = copy.deepcopy(base)
    tuned.model.get_input_embeddings().weight[upper] += offset
    corpus = root / "corpus"
    corpus.mkdir()
    for index, text in enumerate(plain + shouted):
        (corpus / f"doc{index:03d}.txt").write_text(text)
    for name, loaded in (("base", base), ("tuned", tuned)):
        loaded.model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return {"root": root, "corpus": corpus, "base": root / "base", "tuned": root / "tuned"}


def _diff_args(setup: dict[str, Path], out: Path) -> list[str]:
    return ["diff", "--model-a", str(setup["base"]), "--model-b", str(setup["tuned"]),
            "--hookpoint", "resid.2", "--n-tokens", "3000", "--out", str(out),
            "--corpus.source", "text", "--corpus.path", str(setup["corpus"]),
            "--context-len", "32", "--n-latents", "128", "--k", "4", "--epochs", "60",
            "--batch-size", "128", "--lr", "1e-2", "--progress", "false",
            "--spliced-sequences", "4"]


def test_diff_finds_the_latents_of_the_fine_tuned_model(diff_setup, tmp_path, capsys) -> None:
    out = tmp_path / "diff"
    assert main(_diff_args(diff_setup, out)) == 0
    assert "specific to B" in capsys.readouterr().out
    record = json.loads((out / "diff.json").read_text())
    b_only = [r for r in record["latents"] if r["kind"] == "b_only" and r["firings"] >= 5]
    assert b_only, f"no B-specific latent found; counts {record['counts']}"
    for latent in b_only:  # they fire on the upper-case text, which only plain text surrounds
        contexts = latent["top"]
        shouted = [any(ch.isupper() for ch in c["left"][-4:] + c["token"] + c["right"][:4])
                   for c in contexts]
        assert sum(shouted) >= 0.8 * len(contexts), latent
    assert any(not r["only_apparently_specific"] and r["nu_error"] < 0.5 for r in b_only)
    shared = record["counts"]["shared"]
    assert shared > record["counts"]["b_only"] + record["counts"]["a_only"]
    assert [r["source"] for r in record["reconstruction"]["per_source"]] == ["A/resid.2",
                                                                             "B/resid.2"]
    assert all(r["fvu"] < 0.2 for r in record["reconstruction"]["per_source"])
    assert len(record["spliced"]) == 2 and all(r["ce_spliced"] > 0 for r in record["spliced"])
    page = (out / "index.html").read_text()
    assert "Specific to B" in page and f"#feature-{b_only[0]['latent']}" in page
    assert (out / "report" / "index.html").exists()

    weights = out / "crosscoder" / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(_diff_args(diff_setup, out)) == 0  # a finished diff is reused, not retrained
    assert weights.stat().st_mtime_ns == before
    result = diff(DiffConfig(  # the library call behind the command returns its result
        model_a=str(diff_setup["base"]), model_b=str(diff_setup["tuned"]), hookpoint="resid.2",
        n_tokens=3000, out=str(out), corpus=CorpusConfig(source="text",
                                                         path=str(diff_setup["corpus"])),
        context_len=32, n_latents=128, k=4, epochs=60, batch_size=128, lr=1e-2,
        progress=False, spliced_sequences=4))
    assert weights.stat().st_mtime_ns == before
    assert result.counts == record["counts"] and result.page == out / "index.html"
    assert result.report.is_file() and result.record["sources"] == ["A/resid.2", "B/resid.2"]
    changed = _diff_args(diff_setup, out)
    changed[changed.index("--k") + 1] = "8"
    assert main(changed) == 1
    assert "other options" in capsys.readouterr().err


def test_diff_refuses_bad_inputs(diff_setup, tmp_path, capsys) -> None:
    assert main(["diff", "--model-a", str(diff_setup["base"])]) == 1
    assert "give both models" in capsys.readouterr().err
    assert main(["diff", "--model-a", str(diff_setup["base"]), "--model-b",
                 str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err


def test_diff_page_escapes_what_the_data_says() -> None:
    from sparselens.interpretation.diff_page import render_diff_page

    record = {"latent": 3, "relative_norm": 0.97, "density": 0.01, "nu_error": float("nan"),
              "nu_reconstruction": 0.1, "only_apparently_specific": True,
              "top": [{"activation": 2.0, "left": "<script>", "token": "&", "right": "</b>"}]}
    page = render_diff_page("A <vs> B", {"tables": [("t", [{"x": "<i>"}], ["x"])]},
                            [("Specific to B", [record])], report_link="report/index.html")
    assert "<script>" not in page and "&lt;script&gt;" in page and "<mark>&amp;</mark>" in page
    assert "A &lt;vs&gt; B" in page and "&lt;i&gt;" in page and "only apparently" in page
    assert "report/index.html#feature-3" in page and "ν<sup>ε</sup> –" in page
