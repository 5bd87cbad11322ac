"""Top-AFA SAE (Lee et al.): the per-token number of latents chosen by matching the code norm
to the approximate feature activation ||x - b_dec||, and the AFA loss."""

from __future__ import annotations

import pytest
import torch

from dictionary_helpers import make, sparse_data, train
from sparselens.dictionaries import StepContext, build
from sparselens.dictionaries.top_afa import afa_prefix_mask

CONTRIB = torch.tensor([[3.0, 4.0, 0.0, 12.0],
                        [1.0, 1.0, 1.0, 1.0]])


def test_nearest_prefix_by_hand() -> None:
    # Row 0 ranked 12, 4, 3: prefix norms 12, 12.65, 13. AFA 12.5 -> 2 latents (|12.65-12.5|
    # < |12-12.5|). Row 1: prefix norms 1, 1.41, 1.73, 2; AFA 1.6 -> 3 latents.
    keep = afa_prefix_mask(CONTRIB, torch.tensor([12.5, 1.6]), "nearest")
    assert keep[0].tolist() == [False, True, False, True]
    assert int(keep[1].sum()) == 3


def test_reach_prefix_by_hand() -> None:
    keep = afa_prefix_mask(CONTRIB, torch.tensor([12.5, 1.6]), "reach")
    assert keep[0].tolist() == [False, True, False, True]  # 12.65 is the first norm >= 12.5
    assert int(keep[1].sum()) == 3
    everything = afa_prefix_mask(CONTRIB, torch.tensor([100.0, 100.0]), "reach")
    assert everything.all()


def test_codes_follow_the_input_norm() -> None:
    model = build("top_afa", d_in=4, n_latents=4, pre_encoder_bias=False)
    with torch.no_grad():
        model.W_enc.copy_(torch.eye(4))
        model.W_dec.copy_(torch.eye(4))
        model.b_enc.zero_()
        model.b_dec.zero_()
    x = torch.tensor([[3.0, 4.0, 0.0, 12.0]])  # ||x|| = 13: all three positive latents
    torch.testing.assert_close(model.encode(x), x)
    with torch.no_grad():
        model.W_enc.mul_(2.0)  # over-activated: prefix norms 24, 25.3, 26 against AFA 13
    torch.testing.assert_close(model.encode(x), torch.tensor([[0.0, 0.0, 0.0, 24.0]]))


def test_afa_loss_by_hand() -> None:
    model = make("top_afa", afa_coef=0.5, aux_coef=0.0)
    x = sparse_data(32)
    out = model.training_loss(x, ctx=StepContext())
    code_norm = (out.codes * model.W_dec.norm(dim=1)).norm(dim=1)
    afa = (x - model.b_dec).norm(dim=1)
    torch.testing.assert_close(out.terms["afa"], 0.5 * ((code_norm - afa) ** 2).mean())


def test_afa_loss_pulls_code_norms_to_the_input_norm() -> None:
    x = sparse_data(2048)

    def median_ratio(afa_coef: float) -> tuple[float, float]:
        model = make("top_afa", afa_coef=afa_coef)
        train(model, x, steps=100)
        with torch.no_grad():
            codes = model.encode(x)
            norms = (codes * model.W_dec.norm(dim=1)).norm(dim=1)
            ratio = norms / (x - model.b_dec).norm(dim=1)
        return float(ratio.median()), float((codes != 0).sum(-1).float().std())

    without, _ = median_ratio(0.0)
    with_loss, spread = median_ratio(1.0)
    assert abs(with_loss - 1.0) < 0.5 * abs(without - 1.0)
    assert spread > 0  # the number of latents varies per token


def test_transcoder_scales_are_refused() -> None:
    with pytest.raises(ValueError, match="input_scale == output_scale"):
        build("top_afa", d_in=4, n_latents=8, pre_encoder_bias=False, input_scale=2.0,
              output_scale=1.0)
    with pytest.raises(ValueError, match="selection"):
        build("top_afa", d_in=4, n_latents=8, selection="closest")
