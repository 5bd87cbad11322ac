"""Multi-layer SAE (Lawson, Farnik, Houghton and Aitchison, "Residual Stream Analysis with
Multi-Layer SAEs", ICLR 2025): one SAE trained on the residual stream of every layer at once.

The layer is part of the data: a batch holds the residual vectors of the same tokens at every
layer, ``(B, n_layers, width)`` (flattened as ``(B, n_layers * width)`` when it travels through
the trainer), and each of the ``B * n_layers`` rows is encoded and decoded by the same weights,
so a latent means the same direction at every layer and its activation across layers shows
where in depth a feature lives. As in the paper, selection is TopK per row by default.

Two choices where the paper's code differs in detail:

- Normalisation: the paper standardises every row; here each layer gets one fixed scale
  (median norm sqrt(width), see `StackedDictionary`), which equalises layers the same way and
  keeps `decode` a linear map.
- ``layer_embedding``: optionally a per-layer offset e_l added to the decoder bias (and
  subtracted before encoding), ``x̂ = f W_dec + b_dec + e_l``. ``fixed`` sets e_l once from the
  data (the layer's median minus the overall one) so that latents need not spend capacity on
  the layer's mean; ``learned`` trains it. ``none`` is the paper's model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparselens.dictionaries.base import register
from sparselens.dictionaries.init import geometric_median
from sparselens.dictionaries.stacked import StackedConfig, StackedDictionary

LAYER_EMBEDDINGS = ("none", "fixed", "learned")


@dataclass
class MultiLayerConfig(StackedConfig):
    selection: str = "topk"
    """topk (k per row, the paper's choice) or batchtopk."""
    layer_embedding: str = "none"
    """Per-layer offset of the decoder bias: none (the paper), fixed (set from the data at
    initialisation) or learned."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer_embedding not in LAYER_EMBEDDINGS:
            raise ValueError(f"layer_embedding must be one of {LAYER_EMBEDDINGS}, got "
                             f"{self.layer_embedding!r}")

    @property
    def resolved_k_aux(self) -> int:
        """AuxK default from the width of one layer (a row), not of the whole stack."""
        return self.k_aux if self.k_aux is not None else max(1, self.d_source // 2)


@register("mlsae")
class MultiLayerSAE(StackedDictionary):
    """One SAE applied to every layer's row; input ``(B, n_layers, width)`` or flattened."""

    config_class = MultiLayerConfig
    cfg: MultiLayerConfig

    def __init__(self, cfg: MultiLayerConfig) -> None:
        super().__init__(cfg)
        offsets = torch.zeros(self.n_sources, cfg.d_source, dtype=self.W_dec.dtype)
        if cfg.layer_embedding == "learned":
            self.layer_offset = nn.Parameter(offsets)
        elif cfg.layer_embedding == "fixed":
            self.register_buffer("layer_offset", offsets)

    @classmethod
    def weight_config(cls, cfg: StackedConfig) -> StackedConfig:
        """The weights are those of one SAE on a single layer's width."""
        return dataclasses.replace(cfg, d_in=cfg.d_source, d_out=cfg.d_source, n_sources=1,
                                   hookpoint=None)

    def offsets(self) -> Tensor | None:
        """``(n_layers, width)`` per-layer offsets, or None without a layer embedding."""
        return None if self.cfg.layer_embedding == "none" else self.layer_offset

    # ---- forward pieces, in model space on (..., n_layers, width) ----

    def pre_acts(self, x: Tensor) -> Tensor:
        return (x - self.centre()) @ self.W_enc + self.b_enc

    def centre(self, layer: int | None = None) -> Tensor:
        """What is subtracted before encoding: b_dec (if pre_encoder_bias) plus the layer
        offsets (``(n_layers, width)``, or one layer's)."""
        centre = self.b_dec if self.cfg.pre_encoder_bias else torch.zeros_like(self.b_dec)
        offsets = self.offsets()
        if offsets is None:
            return centre
        return centre + (offsets if layer is None else offsets[layer])

    def decode_scaled(self, codes: Tensor) -> Tensor:
        out = codes @ self.W_dec + self.b_dec
        offsets = self.offsets()
        return out if offsets is None else out + offsets

    def encode_layer(self, x: Tensor, layer: int) -> Tensor:
        """Codes ``(..., n)`` of raw activations ``(..., width)`` from one layer."""
        if not 0 <= layer < self.n_sources:
            raise ValueError(f"layer index {layer} out of range; this MLSAE has "
                             f"{self.n_sources} layers ({', '.join(self.cfg.sources)})")
        model = self.scale_input(x) * self.source_scale[layer].to(x.dtype)
        return self.activation((model - self.centre(layer)) @ self.W_enc + self.b_enc)

    # ---- training ----

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor, target: Tensor | None = None) -> None:
        """Per-layer scales; b_dec = the median of all rows; offsets = each layer's median
        minus that (with a layer embedding)."""
        model = self.fit_source_scales(self.as_sources(x)).float()
        self.b_dec.copy_(geometric_median(model.flatten(0, -2)).to(self.b_dec.dtype))
        offsets = self.offsets()
        if offsets is not None:
            for layer in range(self.n_sources):
                median = geometric_median(model[:, layer])
                offsets[layer] = (median - self.b_dec.float()).to(offsets.dtype)
