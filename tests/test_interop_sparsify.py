"""EleutherAI sparsify interop against the real sparsify: TopK SAEs, transcoders and skip
transcoders saved with ``SparseCoder.save_to_disk`` load with identical codes and outputs."""

from __future__ import annotations

import pytest
import torch

sparsify = pytest.importorskip("sparsify")

from sparselens.io.detect import load_any  # noqa: E402

pytestmark = pytest.mark.peers

D_IN, N_LATENTS, K = 12, 48, 5


def randomized_coder(transcode: bool, skip: bool) -> sparsify.SparseCoder:
    cfg = sparsify.SparseCoderConfig(num_latents=N_LATENTS, k=K, transcode=transcode,
                                     skip_connection=skip)
    coder = sparsify.SparseCoder(D_IN, cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in coder.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if "bias" in name
                                                            or name == "b_dec" else 1.0))
    return coder


@pytest.mark.parametrize("transcode, skip", [(False, False), (True, False), (True, True)],
                         ids=["sae", "transcoder", "skip-transcoder"])
def test_sparsify_coders_match(tmp_path, transcode, skip):
    coder = randomized_coder(transcode, skip)
    folder = tmp_path / "layers.3.mlp"
    coder.save_to_disk(folder)
    ours = load_any(folder)
    assert ours.architecture == "topk" and ours.cfg.k == K
    assert ours.cfg.pre_encoder_bias == (not transcode)
    assert ours.cfg.skip_connection == skip and ours.cfg.hookpoint == "layers.3.mlp"
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        top_acts, top_indices, _ = coder.encode(x)
        theirs = torch.zeros(64, N_LATENTS).scatter(-1, top_indices, top_acts)
        diffs = {
            "encode": ours.encode(x) - theirs,
            "decode": ours.decode(theirs) - coder.decode(top_acts, top_indices),
            "forward": ours(x) - coder(x).sae_out,
        }
    for name, diff in diffs.items():
        worst = float(diff.abs().max())
        print(f"sparsify transcode={transcode} skip={skip} {name}: max|diff| = {worst:.2e}")
        assert worst <= 1e-5


def test_run_folder_with_several_hookpoints_lists_them(tmp_path):
    for layer in (0, 1):
        randomized_coder(False, False).save_to_disk(tmp_path / f"layers.{layer}")
    with pytest.raises(ValueError, match=r"holds 2 dictionaries \(layers.0, layers.1\)"):
        load_any(tmp_path)
    assert load_any(tmp_path / "layers.1").cfg.hookpoint == "layers.1"


def test_groupmax_activation_is_refused(tmp_path):
    cfg = sparsify.SparseCoderConfig(num_latents=N_LATENTS, k=4, activation="groupmax")
    sparsify.SparseCoder(D_IN, cfg).save_to_disk(tmp_path)
    with pytest.raises(ValueError, match="'groupmax' is not supported"):
        load_any(tmp_path)
