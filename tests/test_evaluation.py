"""Evaluation: metric formulas on hand-computed cases, streaming exactness, spliced-in CE/KL on a
tiny Llama, the results file, and the `train` -> `eval` command line on a harvested cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sparselens.cli.main import main
from sparselens.data.batch import ActivationBatch
from sparselens.dictionaries.base import Dictionary, DictionaryConfig, build
from sparselens.evaluation import (
    read_latent_density,
    read_results,
    reconstruction_metrics,
    spliced_metrics,
    write_results,
)
from sparselens.evaluation.results import SCHEMA_VERSION, results_record
from sparselens.io.native import load_dictionary, save_dictionary
from sparselens.lens import Lens, ZeroAblate
from sparselens.models.hookpoints import capture, resolve
from sparselens.models.source import LoadedModel

pytestmark = pytest.mark.usefixtures("one_thread")


def batch_of(x: torch.Tensor, name: str = "h") -> ActivationBatch:
    rows = torch.arange(x.shape[0])
    return ActivationBatch(acts={name: x}, token_ids=rows, seq_ids=rows, positions=rows)


def identity_dictionary(d: int, gain: float = 1.0, hookpoint: str | None = None) -> Dictionary:
    """ReLU dictionary with atoms ±e_i: codes relu(x), relu(-x); output gain * x exactly."""
    dictionary = Dictionary(DictionaryConfig(d_in=d, n_latents=2 * d, hookpoint=hookpoint))
    eye = torch.eye(d)
    with torch.no_grad():
        dictionary.W_enc.copy_(torch.cat([eye, -eye], 1))
        dictionary.W_dec.copy_(gain * torch.cat([eye, -eye], 0))
        dictionary.b_enc.zero_()
        dictionary.b_dec.zero_()
    return dictionary


# ---- reconstruction metrics ----


def test_hand_computed_half_reconstruction() -> None:
    """x̂ = x / 2 on three tokens; every number below is worked out by hand."""
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0], [-1.0, 1.0]])
    m = reconstruction_metrics(identity_dictionary(2, gain=0.5), [batch_of(x)], "h",
                               dense_threshold=0.5)
    # Σ||x||² = 16, error = x/2 so Σ||x − x̂||² = 4; mean x̄ = (1, 1), Σ||x − x̄||² = 1 + 5 + 4.
    assert m["n_tokens"] == 3
    assert m["mse"] == pytest.approx(4 / 3)
    assert m["fvu"] == pytest.approx(0.4)
    assert m["explained_variance"] == pytest.approx(0.6)
    assert m["total_variance"] == pytest.approx(10 / 3)
    assert m["cosine_similarity"] == pytest.approx(1.0)
    assert m["relative_reconstruction_bias"] == pytest.approx(0.5)  # (16/4) / (16/2)
    assert m["l0"] == pytest.approx(5 / 3)  # the exact zero in token 2 fires neither sign
    assert m["l1"] == pytest.approx(8 / 3)
    # Latents +x0, +x1, -x0, -x1 fire on 2, 2, 1 and 0 of the 3 tokens.
    torch.testing.assert_close(m["latent_density"],
                               torch.tensor([2 / 3, 2 / 3, 1 / 3, 0.0], dtype=torch.float64))
    assert m["dead_fraction"] == 0.25 and m["dense_fraction"] == 0.5


def test_perfect_reconstruction() -> None:
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    m = reconstruction_metrics(identity_dictionary(6), [batch_of(x)], "h")
    assert m["mse"] == pytest.approx(0.0, abs=1e-10)
    assert m["fvu"] == pytest.approx(0.0, abs=1e-10)
    assert m["cosine_similarity"] == pytest.approx(1.0)
    assert m["relative_reconstruction_bias"] == pytest.approx(1.0)


def test_zero_reconstruction_uses_the_global_mean() -> None:
    """Each batch is constant (zero variance within it), so only the mean over the whole set
    gives the right denominator: x̄ = (3/5, 2/5), Σ||x − x̄||² = 3·0.32 + 2·0.72 = 2.4."""
    dictionary = identity_dictionary(2, gain=0.0)
    batches = [batch_of(torch.tensor([[1.0, 0.0]] * 3)), batch_of(torch.tensor([[0.0, 1.0]] * 2))]
    m = reconstruction_metrics(dictionary, batches, "h")
    assert m["mse"] == pytest.approx(1.0)
    assert m["fvu"] == pytest.approx(5 / 2.4)
    assert m["cosine_similarity"] == 0.0
    assert math.isnan(m["relative_reconstruction_bias"])


def test_metrics_do_not_depend_on_batch_size() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 8, generator=gen) * 3 + 1
    torch.manual_seed(0)
    dictionary = build("topk", d_in=8, n_latents=32, k=3)
    results = [reconstruction_metrics(dictionary, [batch_of(part) for part in x.split(size)], "h")
               for size in (1, 7, 50)]
    for other in results[1:]:
        for key, value in results[0].items():
            if key == "latent_density":
                torch.testing.assert_close(other[key], value)
            else:
                assert other[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_max_tokens_truncates_exactly() -> None:
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    dictionary = identity_dictionary(4, gain=0.7)
    limited = reconstruction_metrics(dictionary, [batch_of(p) for p in x.split(8)], "h",
                                     max_tokens=20)
    first = reconstruction_metrics(dictionary, [batch_of(x[:20])], "h")
    assert limited["n_tokens"] == 20
    assert limited["fvu"] == pytest.approx(first["fvu"])


def test_transcoder_metrics_compare_against_the_target() -> None:
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(3))
    dictionary = Dictionary(DictionaryConfig(d_in=3, n_latents=6, d_out=3,
                                             pre_encoder_bias=False))
    batch = ActivationBatch(acts={"in": x, "out": dictionary(x).detach()},
                            token_ids=torch.zeros(10), seq_ids=torch.zeros(10),
                            positions=torch.zeros(10))
    m = reconstruction_metrics(dictionary, [batch], "in", "out")
    assert m["fvu"] == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("batch, message", [
    (batch_of(torch.ones(3, 2), name="other"), "no activations for hookpoint 'h'"),
    (batch_of(torch.ones(3, 5)), r"width 5 but the dictionary expects 2"),
    (batch_of(torch.tensor([[1.0, float("nan")]])), "NaN or inf"),
])
def test_bad_evaluation_data_is_refused(batch: ActivationBatch, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reconstruction_metrics(identity_dictionary(2), [batch], "h")


def test_empty_evaluation_data_is_refused() -> None:
    with pytest.raises(ValueError, match="no evaluation tokens"):
        reconstruction_metrics(identity_dictionary(2), [], "h")


# ---- spliced-in metrics ----


def test_error_term_splice_matches_clean(tiny_llama: LoadedModel, make_chunks) -> None:
    torch.manual_seed(0)
    sae = build("topk", d_in=32, n_latents=64, k=8, hookpoint="resid.1")
    chunks = make_chunks(4, length=16)
    m = spliced_metrics(sae, tiny_llama, None, chunks)
    assert m["ce_spliced_with_error"] == pytest.approx(m["ce_clean"], abs=1e-5)
    assert m["kl_spliced_with_error"] == pytest.approx(0.0, abs=1e-6)
    assert m["ce_zero_ablation"] > m["ce_clean"] and m["kl_zero_ablation"] > 0
    assert m["kl_spliced"] > 0
    # BOS at position 0: predictions from positions 1..14 of each 16-token sequence count.
    assert m["n_predictions"] == 4 * 14 and m["n_spliced_positions"] == 4 * 15
    assert m["n_sequences"] == 4


def test_identity_splice_recovers_all_loss(tiny_llama: LoadedModel, make_chunks) -> None:
    m = spliced_metrics(identity_dictionary(32, hookpoint="resid.1"), tiny_llama, None,
                        make_chunks(3, length=16))
    assert m["ce_spliced"] == pytest.approx(m["ce_clean"], abs=1e-5)
    assert m["kl_spliced"] == pytest.approx(0.0, abs=1e-6)
    assert m["loss_recovered"] == pytest.approx(1.0, abs=1e-4)


def test_raw_token_ids_find_special_positions(tiny_llama: LoadedModel, make_chunks) -> None:
    chunks = make_chunks(3, length=16)
    sae = identity_dictionary(32, gain=0.5, hookpoint="resid.1")
    from_chunks = spliced_metrics(sae, tiny_llama, None, chunks)
    from_ids = spliced_metrics(sae, tiny_llama, None, torch.stack([c.ids for c in chunks]),
                               batch_size=3)
    for key, value in from_chunks.items():
        assert from_ids[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_special_positions_are_not_spliced(tiny_llama: LoadedModel, make_chunks) -> None:
    chunks = make_chunks(2, length=16)
    ids = torch.stack([c.ids for c in chunks])
    keep = ~torch.stack([c.special for c in chunks])
    hp = resolve(tiny_llama.model, "resid.1")[0]
    with Lens(tiny_llama).edit(ZeroAblate("resid.1")):
        acts = capture(tiny_llama.model, [hp], stop_early=False, input_ids=ids)[hp]
    assert keep[:, 0].logical_not().all() and keep[:, 1:].all()
    assert acts[:, 0].abs().sum() > 0 and acts[:, 1:].abs().sum() == 0


def test_transcoder_error_splice_matches_clean(tiny_llama: LoadedModel, make_chunks) -> None:
    torch.manual_seed(0)
    transcoder = Dictionary(DictionaryConfig(d_in=32, n_latents=64, pre_encoder_bias=False,
                                             hookpoint="mlp_in.1", target_hookpoint="mlp_out.1"))
    m = spliced_metrics(transcoder, tiny_llama, None, make_chunks(2, length=16))
    assert m["ce_spliced_with_error"] == pytest.approx(m["ce_clean"], abs=1e-5)
    assert abs(m["ce_spliced"] - m["ce_clean"]) > 1e-4


def test_spliced_needs_predictions(tiny_llama: LoadedModel) -> None:
    with pytest.raises(ValueError, match="no next-token predictions"):
        spliced_metrics(identity_dictionary(32, hookpoint="resid.1"), tiny_llama, None,
                        [torch.tensor([1, 5])])


# ---- the results file ----


def test_results_round_trip_with_density_file(tmp_path: Path) -> None:
    density = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    record = results_record({"path": "x"}, {"split": "heldout"},
                            {"fvu": 0.1, "latent_density": density}, None)
    path = write_results(tmp_path / "eval.json", record)
    data = read_results(path)
    assert data["schema_version"] == SCHEMA_VERSION and data["spliced"] is None
    assert data["reconstruction"]["latent_density_file"] == "eval.latent_density.safetensors"
    torch.testing.assert_close(read_latent_density(path), density.float())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="newer than this sparselens"):
        read_results(path)


# ---- command line: harvest -> train -> eval ----


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny Llama saved to disk (so `eval` can load it by path) and a cache of resid.1."""
    from conftest import make_tiny_llama, random_chunks
    from sparselens.data.harvest import HarvestConfig, harvest
    from sparselens.models.source import load_model

    root = tmp_path_factory.mktemp("tiny_cache")
    llama = make_tiny_llama()
    llama.model.save_pretrained(root / "model")
    llama.tokenizer.save_pretrained(root / "model")
    loaded = load_model(str(root / "model"))
    harvest(loaded, random_chunks(32, length=16), ["resid.1"], root / "cache",
            HarvestConfig(storage_dtype="float32", batch_size=8, shard_tokens=128,
                          heldout_fraction=0.25, progress=False))
    return root / "cache", root / "model"


TRAIN_ARGS = ["--n-latents", "64", "--dictionary", "k=4", "--n-tokens", "1024",
              "--batch-size", "128", "--init-tokens", "256", "--log.progress", "false",
              "--checkpoint.every-steps", "4"]


def test_train_then_eval_from_the_command_line(tiny_cache: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    cache, _ = tiny_cache
    out = tmp_path / "sae"
    assert main(["train", str(cache), "--out", str(out), *TRAIN_ARGS]) == 0
    assert (out / "weights.safetensors").exists() and (out / "metrics.jsonl").exists()
    assert main(["eval", str(out), "--cache", str(cache), "--max-sequences", "4"]) == 0
    results = read_results(out / "eval.json")
    recon, spliced = results["reconstruction"], results["spliced"]
    assert results["checkpoint"]["architecture"] == "topk"
    assert recon["n_tokens"] > 0 and 0 <= recon["fvu"] < 1.5 and recon["l0"] <= 4
    assert read_latent_density(out / "eval.json").shape == (64,)
    assert spliced["ce_spliced_with_error"] == pytest.approx(spliced["ce_clean"], abs=1e-4)
    assert spliced["n_sequences"] == 4
    assert main(["eval", str(out / "checkpoints" / "step_000000008"), "--cache", str(cache),
                 "--spliced", "false", "--out", str(tmp_path / "mid.json")]) == 0
    assert read_results(tmp_path / "mid.json")["spliced"] is None
    # Resuming a finished run with the same options is a no-op; changed options are refused.
    assert main(["train", str(cache), "--out", str(out), "--resume", *TRAIN_ARGS]) == 0
    assert main(["train", str(cache), "--out", str(out), "--resume", *TRAIN_ARGS,
                 "--seed", "1"]) == 1
    assert main(["train", str(cache), "--out", str(out), *TRAIN_ARGS]) == 1


def test_train_command_reports_config_errors(tiny_cache: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cache, _ = tiny_cache
    args = ["train", str(cache), "--out", str(tmp_path / "x"), "--log.progress", "false",
            "--batch-size", "128"]
    assert main([*args, "--n-latents", "8", "--dictionary", "k=16"]) == 1
    assert "k must be" in capsys.readouterr().err
    assert main([*args, "--hookpoint", "resid.9"]) == 1
    assert "not in the cache" in capsys.readouterr().err
    assert main([*args, "--dictionary", "d_in=7"]) == 1
    assert "does not match the activations' width 32" in capsys.readouterr().err
    assert main([*args, "--batch-size", "100000"]) == 1
    assert "fewer than one batch" in capsys.readouterr().err


@pytest.mark.slow
def test_spliced_on_gemma(gemma: LoadedModel) -> None:
    """On the real model: splicing with the error term is exact, and a random dictionary at
    layer 6 costs loss (while zero-ablating the residual stream costs much more)."""
    from sparselens.data.chunking import chunk_texts

    text = ("The library lends books to anyone with a card. Each book has a number on its spine, "
            "and the numbers tell you which shelf it belongs on. ") * 4
    chunks = list(chunk_texts([text], gemma.tokenizer, context_len=24))[:2]
    torch.manual_seed(0)
    sae = build("topk", d_in=640, n_latents=1024, k=16, hookpoint="resid.6")
    m = spliced_metrics(sae, gemma, None, chunks, batch_size=2)
    assert m["ce_spliced_with_error"] == pytest.approx(m["ce_clean"], abs=1e-3)
    assert m["kl_spliced_with_error"] == pytest.approx(0.0, abs=1e-4)
    assert m["ce_zero_ablation"] > m["ce_clean"] + 1.0
    assert m["kl_spliced"] > 0.01 and m["n_predictions"] == 2 * 22


def test_fvu_above_one_is_a_field_and_a_warning() -> None:
    worse = reconstruction_metrics(identity_dictionary(2, gain=0.0),
                                   [batch_of(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))], "h")
    assert worse["fvu"] > 1 and worse["fvu_above_one"] is True
    assert len(worse["warnings"]) == 1 and "above 1" in worse["warnings"][0]
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    good = reconstruction_metrics(identity_dictionary(6), [batch_of(x)], "h")
    assert good["fvu_above_one"] is False and good["warnings"] == []


def test_eval_command_warns_loudly_when_fvu_is_above_one(
        tiny_cache: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cache, _ = tiny_cache
    out = tmp_path / "sae"
    assert main(["train", str(cache), "--out", str(out), *TRAIN_ARGS]) == 0
    broken = load_dictionary(out)
    with torch.no_grad():
        broken.b_dec.add_(1e3)  # every reconstruction far from the data
    save_dictionary(broken, out)
    capsys.readouterr()
    assert main(["eval", str(out), "--cache", str(cache), "--spliced", "false"]) == 0
    assert "WARNING: FVU" in capsys.readouterr().err
    recon = read_results(out / "eval.json")["reconstruction"]
    assert recon["fvu_above_one"] is True and recon["warnings"]
