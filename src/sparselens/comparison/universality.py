"""Do two models learn the same features? SVCCA and linear CKA on paired feature spaces.

Lan et al., "Sparse autoencoders reveal universal feature spaces across large language models"
(2024): pair the latents of two models' SAEs by activation correlation on the same text, then
compare the two *feature spaces*, i.e. the decoder rows of the paired latents (the features are
the samples, each model's residual dimensions the variables), with representational similarity
measures that ignore rotation and scale: SVCCA (Raghu et al. 2017) and, here as well, linear
CKA (Kornblith et al. 2019). A score means something only against chance, so both are repeated
on random pairings of the same latents (the permutation baseline) and a p-value is given.

Deviations: Lan et al. also drop many-to-one pairs and keep semantically chosen subsets; here
pairs come from the optimal one-to-one matching (`correlation.match_activations`) and can be
filtered by a minimum correlation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _centred(x: Tensor) -> Tensor:
    x = x.detach().double().cpu()
    return x - x.mean(dim=0, keepdim=True)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two ``(n_samples, d)`` matrices, columns centred:
    ``|Yc^T Xc|_F^2 / (|Xc^T Xc|_F |Yc^T Yc|_F)``."""
    xc, yc = _centred(x), _centred(y)
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    denom = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return float(cross / denom) if denom > 0 else 0.0


def _top_directions(x: Tensor, keep_variance: float) -> Tensor:
    """Orthonormal basis ``(n, r)`` of the top singular directions of centred `x` that explain
    `keep_variance` of its variance (the SV step of SVCCA)."""
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    energy = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-300)
    rank = int((energy < keep_variance).sum()) + 1
    return u[:, :min(rank, s.shape[0])]


def svcca(x: Tensor, y: Tensor, keep_variance: float = 0.99) -> float:
    """SVCCA: reduce each centred matrix to the singular directions holding `keep_variance` of
    its variance, then the mean canonical correlation between the two reduced spaces (the
    singular values of ``Ux^T Uy`` for orthonormal bases Ux, Uy)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"SVCCA needs the same samples on both sides ({x.shape[0]} vs "
                         f"{y.shape[0]} rows)")
    ux = _top_directions(_centred(x), keep_variance)
    uy = _top_directions(_centred(y), keep_variance)
    corr = torch.linalg.svdvals(ux.T @ uy)
    return float(corr.clamp(0, 1).mean())


@dataclass
class SpaceSimilarity:
    """SVCCA and CKA of paired features, with the same scores on random pairings."""

    n_pairs: int
    svcca: float
    cka: float
    baseline_svcca: list[float]
    baseline_cka: list[float]
    dims: tuple[int, int] = (0, 0)
    """Singular directions SVCCA kept on each side (`keep_variance` of the variance)."""

    @property
    def svcca_floor(self) -> float:
        """The least SVCCA *any* pairing of these samples can score. The kept directions are
        subspaces of the centred sample space (dimension n_pairs - 1); two subspaces of
        dimensions p and q in it share at least p + q - (n_pairs - 1) directions, each a
        canonical correlation of 1. With fewer pairs than kept directions (p + q >= n - 1)
        random pairings score near 1 and SVCCA says nothing."""
        p, q = self.dims
        shared = max(0, p + q - (self.n_pairs - 1))
        return shared / max(1, min(p, q))

    def svcca_note(self) -> str | None:
        """A plain warning when SVCCA cannot tell paired from random features."""
        p, q = self.dims
        if self.svcca_floor <= 0:
            return None
        return (f"SVCCA is uninformative here: with {self.n_pairs} pairs, the {p} and {q} "
                f"directions kept must share at least {p + q - (self.n_pairs - 1)}, so any "
                f"pairing scores at least {self.svcca_floor:.3f}; read CKA, or pair more "
                "latents")

    def _p(self, value: float, baseline: list[float]) -> float:
        """One-sided permutation p-value: (1 + #random pairings at least as similar) / (1 + n)."""
        return (1 + sum(b >= value for b in baseline)) / (1 + len(baseline))

    def describe(self) -> str:
        """One line for the console: both scores against random pairings (and the note)."""
        parts = []
        for name, value, base in (("SVCCA", self.svcca, self.baseline_svcca),
                                  ("CKA", self.cka, self.baseline_cka)):
            chance = (f" (random pairings {np.mean(base):.4f} ± {np.std(base):.4f}, "
                      f"p = {self._p(value, base):.3g})" if base else "")
            parts.append(f"{name} {value:.4f}{chance}")
        note = self.svcca_note()
        return f"{self.n_pairs} pairs: " + ", ".join(parts) + (f"; {note}" if note else "")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_pairs": self.n_pairs, "n_permutations": len(self.baseline_cka),
                               "svcca_dims": list(self.dims), "svcca_floor": self.svcca_floor,
                               "svcca_note": self.svcca_note()}
        for name, value, base in (("svcca", self.svcca, self.baseline_svcca),
                                  ("cka", self.cka, self.baseline_cka)):
            out[name] = {"paired": value, "random_mean": float(np.mean(base)) if base else None,
                         "random_std": float(np.std(base)) if base else None,
                         "p_value": self._p(value, base) if base else None}
        return out


def paired_space_similarity(w_a: Tensor, w_b: Tensor, rows: np.ndarray, cols: np.ndarray,
                            n_permutations: int = 100, keep_variance: float = 0.99,
                            seed: int = 0) -> SpaceSimilarity:
    """SVCCA and CKA between ``w_a[rows]`` and ``w_b[cols]`` (decoder rows of paired latents;
    the widths may differ), and on `n_permutations` random re-pairings of the same rows."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    if rows.size != cols.size:
        raise ValueError("rows and cols must pair up one to one")
    if rows.size < 3:
        raise ValueError(f"only {rows.size} paired latents: SVCCA/CKA need at least 3 (lower the "
                         "minimum correlation or read more shared tokens)")
    x, y = w_a[torch.as_tensor(rows)], w_b[torch.as_tensor(cols)]
    # Permuting the samples of y permutes the rows of its centred matrix and of its singular
    # basis, so both reductions are computed once and only the cheap last steps repeat.
    xc, yc = _centred(x), _centred(y)
    ux, uy = _top_directions(xc, keep_variance), _top_directions(yc, keep_variance)
    gram_x = torch.linalg.matrix_norm(xc.T @ xc)
    gram_y = torch.linalg.matrix_norm(yc.T @ yc)

    def scores(order: Tensor) -> tuple[float, float]:
        canonical = torch.linalg.svdvals(ux.T @ uy[order]).clamp(0, 1).mean()
        cka = torch.linalg.matrix_norm(yc[order].T @ xc) ** 2 / (gram_x * gram_y).clamp_min(
            1e-300)
        return float(canonical), float(cka)

    gen = torch.Generator().manual_seed(seed)
    baseline = [scores(torch.randperm(y.shape[0], generator=gen))
                for _ in range(n_permutations)]
    paired = scores(torch.arange(y.shape[0]))
    return SpaceSimilarity(int(rows.size), paired[0], paired[1], [b[0] for b in baseline],
                           [b[1] for b in baseline], (int(ux.shape[1]), int(uy.shape[1])))
