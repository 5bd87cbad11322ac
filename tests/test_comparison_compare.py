"""The compare pipeline: seeds, permuted selves, hookpoints, the CLI, and bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import byte_tokenizer, random_chunks
from dictionary_helpers import permuted
from sparselens.cli.main import main
from sparselens.comparison.compare import CompareOptions, compare_dictionaries
from sparselens.data.batch import ActivationBatch
from sparselens.dictionaries.base import Dictionary, build
from sparselens.evaluation.matching import match_decoders
from sparselens.io.native import save_dictionary

D, N_TRUE, BATCH = 32, 40, 128


def _atoms() -> torch.Tensor:
    atoms = torch.randn(N_TRUE, D, generator=torch.Generator().manual_seed(123))
    return atoms / atoms.norm(dim=1, keepdim=True)


def _data(skip_batches: int) -> Iterator[ActivationBatch]:
    """Each token: 3 of 40 known directions with magnitudes in [0.5, 1.5)."""
    atoms, index = _atoms(), skip_batches
    while True:
        gen = torch.Generator().manual_seed(index)
        which = torch.rand(BATCH, N_TRUE, generator=gen).topk(3, dim=1).indices
        codes = torch.zeros(BATCH, N_TRUE).scatter_(1, which, torch.rand(BATCH, 3,
                                                                         generator=gen) + 0.5)
        rows = torch.arange(BATCH)
        yield ActivationBatch({"h": codes @ atoms}, rows, rows, rows)
        index += 1


def _train(seed: int, steps: int, n_latents: int = 40) -> Dictionary:
    from sparselens.training import LogConfig, OptimConfig, TrainConfig, Trainer

    cfg = TrainConfig(n_latents=n_latents, dictionary={"k": 3}, n_tokens=BATCH * steps,
                      batch_size=BATCH, seed=seed, init_tokens=4 * BATCH,
                      optim=OptimConfig(lr=5e-3), log=LogConfig(progress=False))
    trainer = Trainer(cfg, _data)
    trainer.fit()
    return trainer.dictionary


def test_two_seeds_agree_after_training_and_not_before(one_thread) -> None:
    """Two TopK SAEs trained with different seeds on the same data find the same features
    (PW-MCC near 1, most pairs above 0.9); at initialisation they do not."""
    untrained = match_decoders(_train(0, 1).W_dec, _train(1, 1).W_dec)
    trained = match_decoders(_train(0, 600).W_dec, _train(1, 600).W_dec)
    print(f"PW-MCC untrained {untrained.pwmcc:.3f}, trained {trained.pwmcc:.3f}, "
          f">=0.9: {trained.fraction_above(0.9):.2f}")
    assert untrained.pwmcc < 0.5
    assert trained.pwmcc > 0.85 and trained.fraction_above(0.9) > 0.7
    counts, edges = trained.histogram(bins=10)
    assert sum(counts) == 40 and edges[0] == -1.0


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory, tiny_llama) -> Path:
    from sparselens.data.harvest import HarvestConfig, harvest

    cache = tmp_path_factory.mktemp("compare") / "cache"
    harvest(tiny_llama, random_chunks(40, length=32), ["resid.1", "resid.2"], cache,
            HarvestConfig(batch_size=8, shard_tokens=256, heldout_fraction=0.2,
                          progress=False))
    return cache


def test_permuted_self_through_the_cli_scores_one_on_both_measures(tiny_cache, tmp_path,
                                                                  capsys) -> None:
    torch.manual_seed(0)
    a = build("topk", d_in=32, n_latents=64, k=4, hookpoint="resid.2")
    save_dictionary(a, tmp_path / "a")
    save_dictionary(permuted(a), tmp_path / "b")
    tokenizer = tmp_path / "tokenizer"
    byte_tokenizer().save_pretrained(tokenizer)
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--cache",
                 str(tiny_cache), "--tokenizer", str(tokenizer), "--out", str(out),
                 "--options.n-permutations", "5"]) == 0
    record = json.loads((out / "compare.json").read_text())
    assert record["decoder_matching"]["pwmcc"] == 1.0
    assert record["activation_matching"]["pwmcc"] == pytest.approx(1.0, abs=1e-9)
    assert record["shared_tokens"] > 100
    assert record["novel"] == {"A": [], "B": []}
    assert record["universality"]["cka"]["paired"] == pytest.approx(1.0)
    page = (out / "index.html").read_text()
    assert "PW-MCC" in page and "data:image/png;base64" in page
    assert "PW-MCC 1.0000" in capsys.readouterr().out


def test_two_hookpoints_and_a_wider_dictionary(tiny_cache, tmp_path) -> None:
    """resid.1 vs resid.2 of one model: activation matching on shared tokens; the wider
    dictionary holds planted children of one latent (a split) and a latent A lacks (novel)."""
    from sparselens.data.cache import ActivationCache

    torch.manual_seed(1)
    a = build("topk", d_in=32, n_latents=32, k=4, hookpoint="resid.1")
    b = build("topk", d_in=32, n_latents=40, k=4, hookpoint="resid.2")
    with torch.no_grad():
        b.W_dec[:32] = a.W_dec
        noise = torch.randn(32)
        child = a.W_dec[0] + 0.6 * noise / noise.norm()
        b.W_dec[0] = child / child.norm()
        twin = 2 * a.W_dec[0] - b.W_dec[0]
        b.W_dec[33] = twin / twin.norm()
    result = compare_dictionaries(a, b, ("a", "b"), ActivationCache.open(tiny_cache),
                                  options=CompareOptions(n_permutations=5))
    assert result.activation is not None and result.activation.n_a == 32
    assert [s.latent for s in result.splits][:1] == [0]
    assert sorted(result.splits[0].children) == [0, 33]
    assert min(result.novel["B"] or [32]) >= 32  # only B's extra latents can be novel
    assert set(result.novel["A"]) <= {0}


def test_bad_input_is_said_plainly(tmp_path, capsys) -> None:
    save_dictionary(build("topk", d_in=32, n_latents=16, k=2), tmp_path / "a")
    save_dictionary(build("topk", d_in=24, n_latents=16, k=2), tmp_path / "b")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(tmp_path / "out")]) == 0
    assert "no decoder cosine; give --cache" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a")]) == 1
    assert "give two dictionaries" in capsys.readouterr().err
