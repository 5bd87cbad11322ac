"""dictionary_learning interop against the real library: every dictionary class, saved the way
its ``trainSAE`` saves (``ae.pt`` state dict + ``config.json``) and loaded back by its own
``load_dictionary``, gives the codes and reconstructions sparselens gives for the same files.
"""

from __future__ import annotations

import json

import pytest
import torch

dl = pytest.importorskip("dictionary_learning")

from dictionary_learning.trainers.batch_top_k import BatchTopKSAE  # noqa: E402
from dictionary_learning.trainers.matryoshka_batch_top_k import (  # noqa: E402
    MatryoshkaBatchTopKSAE,
)
from dictionary_learning.trainers.top_k import AutoEncoderTopK  # noqa: E402
from dictionary_learning.utils import load_dictionary  # noqa: E402

from sparselens.io.detect import load_any  # noqa: E402
from sparselens.io.dictionary_learning import load_dictionary_learning  # noqa: E402

pytestmark = pytest.mark.peers

D, N, K = 12, 48, 5


def peers():
    """(class name, peer module, sparselens variant) with random non-trivial parameters."""
    modules = [
        ("AutoEncoder", dl.AutoEncoder(D, N), "relu"),
        ("AutoEncoderNew", dl.dictionary.AutoEncoderNew(D, N), "relu"),
        ("GatedAutoEncoder", dl.GatedAutoEncoder(D, N), "gated"),
        ("AutoEncoderTopK", AutoEncoderTopK(D, N, K), "topk"),
        ("BatchTopKSAE", BatchTopKSAE(D, N, K), "batchtopk"),
        ("MatryoshkaBatchTopKSAE", MatryoshkaBatchTopKSAE(D, N, K, [8, 16, 24]), "matryoshka"),
        ("JumpReluAutoEncoder", dl.JumpReluAutoEncoder(D, N), "jumprelu"),
    ]
    gen = torch.Generator().manual_seed(0)
    for _, module, _ in modules:
        with torch.no_grad():
            for name, p in module.named_parameters():
                values = torch.randn(p.shape, generator=gen)
                if "threshold" in name:
                    values = values.abs() * 0.3 + 0.05
                elif p.dim() == 2:
                    values = values / D**0.5  # rows and columns of roughly unit norm
                small = "bias" in name or name.startswith("b_") or name == "r_mag"
                p.copy_(values * (0.5 if small else 1.0))
        if hasattr(module, "threshold") and module.threshold.dim() == 0:
            module.threshold.fill_(0.4)
    return modules


def save_like_trainsae(module, class_name: str, folder) -> None:
    """What ``dictionary_learning.training.trainSAE`` writes."""
    folder.mkdir()
    torch.save({k: v.cpu() for k, v in module.state_dict().items()}, folder / "ae.pt")
    trainer = {"dict_class": class_name, "lm_name": "tiny", "submodule_name": "resid_2",
               "activation_dim": D, "dict_size": N}
    if hasattr(module, "k"):
        trainer["k"] = int(module.k)
    (folder / "config.json").write_text(json.dumps({"trainer": trainer}))


def compare(tag: str, ours, theirs, x: torch.Tensor) -> None:
    with torch.no_grad():
        codes = theirs.encode(x)
        active = float((codes != 0).float().mean())
        assert 0.02 < active < 0.9, f"degenerate test: {active:.2f} of codes active"
        for name, diff in (("encode", ours.encode(x) - codes),
                           ("decode", ours.decode(codes) - theirs.decode(codes)),
                           ("forward", ours(x) - theirs(x))):
            worst = float(diff.abs().max())
            print(f"dictionary_learning {tag} {name}: max|diff| = {worst:.2e}")
            assert worst <= 1e-5, f"{tag} {name}: {worst}"


@pytest.mark.parametrize("index", range(7), ids=[p[0] for p in peers()])
def test_every_dictionary_class_matches(tmp_path, index):
    class_name, module, variant = peers()[index]
    save_like_trainsae(module, class_name, tmp_path / "trainer_0")
    theirs, _ = load_dictionary(str(tmp_path / "trainer_0"), device="cpu")
    ours = load_any(tmp_path / "trainer_0")
    assert ours.architecture == variant
    assert (ours.cfg.model, ours.cfg.hookpoint) == ("tiny", "resid_2")
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(1)) * 2
    compare(class_name, ours, theirs, x)


def test_autoencoder_without_decoder_normalisation_matches_the_raw_module(tmp_path):
    _, module, _ = peers()[0]
    save_like_trainsae(module, "AutoEncoder", tmp_path / "ae")
    ours = load_dictionary_learning(tmp_path / "ae" / "ae.pt", normalize_decoder=False)
    compare("AutoEncoder (raw)", ours, module, torch.randn(64, D) * 2)
    assert not ours.cfg.unit_norm_decoder  # training would otherwise rescale its rows


def test_checkpoints_written_by_trainsae_load(tmp_path):
    """The real training loop (with norm-factor folding and an estimated BatchTopK threshold)."""
    from dictionary_learning.trainers import BatchTopKTrainer, StandardTrainer
    from dictionary_learning.training import trainSAE

    common = {"steps": 4, "activation_dim": D, "dict_size": N, "layer": 2, "lm_name": "tiny",
              "device": "cpu", "warmup_steps": 1, "sparsity_warmup_steps": None}
    configs = [{"trainer": StandardTrainer, **common},
               {"trainer": BatchTopKTrainer, **{k: v for k, v in common.items()
                                                if k != "sparsity_warmup_steps"},
                "k": K, "threshold_start_step": 0, "lr": 1e-2}]
    gen = torch.Generator().manual_seed(2)
    data = [torch.randn(32, D, generator=gen) * 3 + 1 for _ in range(6)]
    trainSAE(data, configs, steps=4, save_dir=str(tmp_path), device="cpu",
             normalize_activations=True)
    x = torch.randn(64, D, generator=gen) * 3 + 1
    for index in range(2):
        folder = tmp_path / f"trainer_{index}"
        theirs, config = load_dictionary(str(folder), device="cpu")
        if hasattr(theirs, "threshold"):
            assert float(theirs.threshold) > 0  # estimated during the run, not the -1 default
        compare(config["trainer"]["dict_class"] + " (trainSAE)", load_any(folder), theirs, x)
