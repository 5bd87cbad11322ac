"""Synthetic sparse data and a tiny training loop for the dictionary tests.

The trainer lives elsewhere; these tests drive a dictionary through the same hooks it uses
(``training_loss``, ``before_optimizer_step``, ``after_optimizer_step``, ``StepContext``) so
each variant's math is tested on its own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sparselens.dictionaries import Dictionary, StepContext, build

D_IN = 16
N_LATENTS = 64

# Small, valid settings for every registered variant (used by the parametrised tests).
VARIANTS: dict[str, dict[str, Any]] = {
    "relu": {"sparsity_coef": 1e-2},
    "relu_dn": {"sparsity_coef": 1e-2},
    "topk": {"k": 4},
    "batchtopk": {"k": 4},
    "multi_topk": {"k": 4},
    "abstopk": {"k": 4},
    "matryoshka": {"k": 4, "group_sizes": [8, 24, 32]},
    "jumprelu": {"sparsity_coef": 1e-2},
    "gated": {"sparsity_coef": 1e-2},
    "p_anneal": {"sparsity_coef": 1e-2},
    "feature_choice": {"k": 4},
    "mutual_choice": {"k": 4},
    "top_afa": {},
    "mp": {"k": 4},
    "archetypal": {"k": 4, "n_candidates": 48, "delta": 0.5},
    "variational": {"k": 4, "kl_coef": 0.1},
    "polysae": {"k": 4, "interaction_rank": 4},
    "kronsae": {"k": 4, "base": 2, "compose": 8},
    "mdl": {"sparsity_coef": 1e-2, "value_bits": 4.0},
}


def make(name: str, **overrides: Any) -> Dictionary:
    torch.manual_seed(0)
    return build(name, d_in=D_IN, n_latents=N_LATENTS, **{**VARIANTS[name], **overrides})


def sparse_data(n_tokens: int = 2048, d: int = D_IN, n_features: int = 32, active: int = 3,
                seed: int = 0) -> Tensor:
    """Tokens that are sums of `active` random unit directions (out of `n_features`) with
    magnitudes in [1, 2), plus a constant offset: data an SAE can explain sparsely."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_features, d, generator=gen)
    directions /= directions.norm(dim=1, keepdim=True)
    scores = torch.rand(n_tokens, n_features, generator=gen)
    chosen = scores.topk(active, dim=1).indices
    coefs = torch.zeros(n_tokens, n_features).scatter(
        1, chosen, 1.0 + torch.rand(n_tokens, active, generator=gen))
    return coefs @ directions + 0.5


def train(model: Dictionary, x: Tensor, steps: int = 100, lr: float = 1e-2,
          batch_size: int = 128, dead_after: int = 20, seed: int = 0,
          target: Tensor | None = None) -> list[float]:
    """Adam on `model` for `steps` batches of `x` (and `target`, for a transcoder), as the
    trainer would; returns the losses."""
    torch.manual_seed(seed)
    model.initialize_from_data(x[:512], None if target is None else target[:512])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    silent = torch.zeros(model.cfg.n_latents, dtype=torch.long)
    losses = []
    for step in range(steps):
        rows = torch.randint(0, x.shape[0], (batch_size,))
        ctx = StepContext(step=step, total_steps=steps, dead_mask=silent >= dead_after)
        out = model.training_loss(x[rows], None if target is None else target[rows], ctx)
        opt.zero_grad()
        out.loss.backward()
        model.before_optimizer_step(ctx)
        opt.step()
        model.after_optimizer_step(ctx)
        fired = (out.codes != 0).any(0)
        silent = torch.where(fired, torch.zeros_like(silent), silent + 1)
        losses.append(float(out.loss.detach()))
    return losses


def mean_l0(model: Dictionary, x: Tensor) -> float:
    with torch.no_grad():
        return float((model.encode(x) != 0).sum(-1).float().mean())


def fvu(model: Dictionary, x: Tensor) -> float:
    with torch.no_grad():
        err = (model(x) - x).pow(2).sum()
        return float(err / (x - x.mean(0)).pow(2).sum())


def l0_without_and_with_penalty(name: str, coef: float, steps: int = 100) -> tuple[float, float]:
    """Mean L0 after the same training with sparsity_coef 0 and `coef`."""
    x = sparse_data(2048)
    free, penalised = make(name, sparsity_coef=0.0), make(name, sparsity_coef=coef)
    train(free, x, steps=steps)
    train(penalised, x, steps=steps)
    return mean_l0(free, x), mean_l0(penalised, x)


def permuted(dictionary: Dictionary, seed: int = 0) -> Dictionary:
    """The same TopK dictionary with its latents in another (seeded) order."""
    perm = torch.randperm(dictionary.cfg.n_latents, generator=torch.Generator().manual_seed(seed))
    other = build("topk", **dictionary.cfg.to_dict())
    other.load_state_dict(dictionary.state_dict())
    with torch.no_grad():
        other.W_dec.copy_(dictionary.W_dec[perm])
        other.W_enc.copy_(dictionary.W_enc[:, perm])
        other.b_enc.copy_(dictionary.b_enc[perm])
    return other
