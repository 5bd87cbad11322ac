"""Transcoders (Dunefsky, Chlenski and Nanda, "Transcoders Find Interpretable LLM Feature
Circuits", 2024) and skip transcoders (Paulo, Shabalin and Belrose, "Transcoders Beat Sparse
Autoencoders for Interpretability", 2025).

A transcoder is not a variant of its own: it is any dictionary of the family configured to read
one site and write another (``d_out != d_in``, no pre-encoder bias since the input is not what
is reconstructed), typically a module's input and output, so that its latents stand in for the
module in circuit analysis. A skip transcoder adds a learned linear path from input to output
(``skip_connection``), which takes the linear part of the module off the sparse latents. Any
sparsity of the family applies, except matching pursuit, whose encoder is its decoder.
This file only spells those configurations out.
"""

from __future__ import annotations

from typing import Any

from sparselens.dictionaries.base import Dictionary, build


def mlp_sites(layer: int) -> tuple[str, str]:
    """(input, target) hookpoints of the MLP of block `layer`: ``mlp_in.L -> mlp_out.L``."""
    if not isinstance(layer, int) or layer < 0:
        raise ValueError(f"layer must be a non-negative integer, got {layer!r}")
    return f"mlp_in.{layer}", f"mlp_out.{layer}"


def build_transcoder(architecture: str, d_in: int, d_out: int, n_latents: int, *,
                     skip: bool = False, hookpoint: str | None = None,
                     target_hookpoint: str | None = None, **fields: Any) -> Dictionary:
    """A dictionary of `architecture` mapping ``d_in -> d_out``, with a skip path if `skip`.

    The trainer builds the same thing from a `TrainConfig` with ``hookpoint`` and
    ``target_hookpoint`` set (and ``dictionary={"skip_connection": True}`` for a skip path).
    """
    return build(architecture, d_in=d_in, d_out=d_out, n_latents=n_latents,
                 pre_encoder_bias=False, skip_connection=skip, hookpoint=hookpoint,
                 target_hookpoint=target_hookpoint, **fields)
