"""Dark matter: a linear error is found linear, independent noise is not."""

from __future__ import annotations

import pytest
import torch

from sparselens.evaluation.dark_matter import dark_matter_metrics


def _inputs(n: int = 4000, d: int = 12) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0))


def test_linear_error_is_fully_predictable() -> None:
    x = _inputs()
    error = x @ torch.randn(12, 12, generator=torch.Generator().manual_seed(1)) + 0.5
    result = dark_matter_metrics(x, error)
    assert result["linear_error_fraction"] == pytest.approx(1.0, abs=1e-6)
    assert result["nonlinear_error_fvu"] == pytest.approx(0.0, abs=1e-6)


def test_independent_noise_is_dark() -> None:
    x = _inputs()
    noise = torch.randn(4000, 12, generator=torch.Generator().manual_seed(2))
    result = dark_matter_metrics(x, noise)
    assert abs(result["linear_error_fraction"]) < 0.02
    assert result["nonlinear_error_fvu"] == pytest.approx(result["error_fvu"], rel=0.05)
    assert abs(result["error_norm_r2"]) < 0.02


def test_error_norm_prediction_and_mixture() -> None:
    x = _inputs()
    noise = torch.randn(4000, 12, generator=torch.Generator().manual_seed(3))
    scale = (x[:, :1] * 0.3 + 1.0)  # the noise norm is a linear function of x
    result = dark_matter_metrics(x, 0.5 * x + noise * scale)
    assert 0.05 < result["linear_error_fraction"] < 0.5
    assert result["error_norm_r2"] > 0.3


def test_too_few_tokens_is_a_clear_error() -> None:
    x = _inputs(30)
    with pytest.raises(ValueError, match="training tokens"):
        dark_matter_metrics(x, x)
