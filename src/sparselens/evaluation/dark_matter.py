"""Dark matter: how much of a dictionary's error is a linear function of its input.

Engels et al. (2024, "Decomposing The Dark Matter of Sparse Autoencoders") split the error
e = x − x̂ into a part linearly predictable from the input x and a nonlinear rest, and show
that the error's *norm* is also largely predictable from x. Following the paper, with a
linear map (plus bias) fitted by least squares on training tokens and scored on disjoint test
tokens:

- ``linear_error_fraction`` = 1 − Σ‖e − ê‖² / Σ‖e − ē‖² on test tokens: the share of the error's
  variance a linear map of x explains (the paper's "linearly predictable" error);
- ``nonlinear_error_fvu`` = Σ‖e − ê‖² / Σ‖x − x̄‖²: what is left, as a fraction of the
  activation variance (comparable to the dictionary's FVU, which it cannot exceed much);
- ``error_norm_r2``: R² of a linear regression of ‖e‖ on x (per-token error norm prediction).

Deviation: the paper uses plain least squares; we add a small ridge term (``ridge`` times the
mean diagonal of XᵀX) so that rank-deficient activations (dead dimensions) stay solvable. With
d_in + 1 parameters per output, the training split needs well over d_in tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _fit(x: Tensor, y: Tensor, ridge: float) -> Tensor:
    """Least-squares weights of ``[x, 1] @ W ≈ y`` with a relative ridge (float64)."""
    design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    gram = design.T @ design
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=x.dtype)
    return torch.linalg.solve(gram, design.T @ y)


def _predict(x: Tensor, weights: Tensor) -> Tensor:
    return x @ weights[:-1] + weights[-1]


def _r2(y: Tensor, pred: Tensor) -> float:
    total = (y - y.mean(0)).pow(2).sum()
    if float(total) == 0.0:
        raise ValueError("the target is constant on the test tokens: R² is undefined")
    return 1.0 - float((y - pred).pow(2).sum() / total)


def dark_matter_metrics(x: Tensor, error: Tensor, *, test_fraction: float = 0.5,
                        ridge: float = 1e-6, seed: int = 0) -> dict[str, Any]:
    """Linear/nonlinear split of `error` ``(N, d_out)`` given inputs `x` ``(N, d_in)``.

    Tokens are split at random into train and test (``test_fraction``); pass tokens from
    held-out sequences. Raises if the training split has no more tokens than parameters.
    """
    if x.shape[0] != error.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {error.shape[0]} errors")
    x, error = x.detach().double().cpu(), error.detach().double().cpu()
    n = x.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_fraction))
    test, train = order[:n_test], order[n_test:]
    if train.numel() <= 2 * (x.shape[1] + 1) or n_test < 2:
        raise ValueError(f"dark matter needs more than {2 * (x.shape[1] + 1)} training tokens "
                         f"(twice the {x.shape[1] + 1} parameters per output) and 2 test tokens; "
                         f"got {train.numel()} and {n_test}: evaluate on more tokens")
    weights = _fit(x[train], error[train], ridge)
    residual = error[test] - _predict(x[test], weights)
    x_var = (x[test] - x[test].mean(0)).pow(2).sum()
    norms = error.norm(dim=1, keepdim=True)
    norm_weights = _fit(x[train], norms[train], ridge)
    return {"linear_error_fraction": _r2(error[test], error[test] - residual),
            "nonlinear_error_fvu": float(residual.pow(2).sum() / x_var),
            "error_fvu": float(error[test].pow(2).sum() / x_var),
            "error_norm_r2": _r2(norms[test], _predict(x[test], norm_weights)),
            "n_train": int(train.numel()), "n_test": n_test, "ridge": ridge}
