"""AbsTopK SAE: top-k by magnitude with signed codes.

The k pre-activations of largest absolute value are kept with their sign and no ReLU, so a
single latent can represent both directions of a concept (x and -x) instead of spending two
latents on them. AuxK ranks dead latents the same way. Training runs through the sparse
kernel (selection ``"magnitude"``); the dense path of `TopKBase` is its reference.
"""

from __future__ import annotations

from torch import Tensor

from sparselens.dictionaries.base import register
from sparselens.dictionaries.topk import SparseKernelTraining, TopKConfig


@register("abstopk")
class AbsTopKSAE(SparseKernelTraining):
    """``f = pre * 1[|pre| among the k largest |pre| of the token]``."""

    config_class = TopKConfig
    cfg: TopKConfig
    auxk_by_magnitude = True
    kernel_selection = "magnitude"

    def select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        indices = pre.abs().topk(self.cfg.k, dim=-1, sorted=False).indices
        return pre.gather(-1, indices), indices
