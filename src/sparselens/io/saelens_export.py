"""Write sparselens dictionaries in the SAELens format (``cfg.json`` + ``sae_weights.safetensors``).

The input/output scales are folded into the weights first (codes, hence thresholds, do not
change), so the written SAE works on raw activations with ``normalize_activations="none"``.
Each variant maps onto the SAELens inference class that computes the same codes; before
writing, the codes SAELens would compute from the file are checked against sparselens's own
on probe inputs, so an export is either exact or refused.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sparselens.core.atomic import atomic_write_bytes, atomic_write_json
from sparselens.io.saelens import CFG_FILE, WEIGHTS_FILE, hookpoint_to_tl

if TYPE_CHECKING:
    from sparselens.dictionaries.base import Dictionary

WRITTEN_LAYOUT_VERSION = "6.0.0"
"""The SAELens release whose ``cfg.json`` layout we write (SAELens reads older ones differently)."""

EXPORT_KINDS = {"relu": "standard", "relu_dn": "standard", "p_anneal": "standard",
                "topk": "topk", "multi_topk": "topk", "jumprelu": "jumprelu",
                "batchtopk": "jumprelu", "matryoshka": "jumprelu", "gated": "gated"}
"""sparselens variant -> SAELens inference class (BatchTopK-style SAEs export their thresholds,
as SAELens itself saves them). Every export is also checked numerically."""

MAX_MISMATCH = 1e-4
"""Fraction of probe codes allowed to differ (rounding at a threshold or a TopK near-tie)."""


def save_saelens(dictionary: Dictionary, path: str | os.PathLike) -> Path:
    """Write `dictionary` as an SAELens folder that ``SAE.load_from_disk`` reads.

    The scales are folded in first (the live module is untouched), so the written SAE works on
    raw activations. Raises ValueError for variants SAELens has no inference class for.
    SAELens's JumpReLU has no per-token cap: a BatchTopK-family `token_cap` is dropped (with a
    warning, and recorded in the metadata), so the file encodes like the uncapped dictionary,
    which differs only on tokens with more than the cap above the threshold.
    """
    from safetensors.torch import save

    folded = copy.deepcopy(dictionary).cpu()
    folded.fold_scales()
    dropped_cap = getattr(folded.cfg, "token_cap", None)
    if dropped_cap is not None:
        warnings.warn(f"SAELens cannot express token_cap={dropped_cap} (at most that many times "
                      "k latents per token); the exported SAE has no cap", stacklevel=2)
        folded.cfg.token_cap = None
    arch, tensors = _export_tensors(folded)
    cfg = folded.cfg
    transcoder = "transcoder" in arch
    metadata = {
        "sae_lens_version": WRITTEN_LAYOUT_VERSION, "model_name": cfg.model,
        "hook_name": hookpoint_to_tl(cfg.hookpoint), "sparselens_hookpoint": cfg.hookpoint,
        "sparselens_architecture": folded.architecture,
        "sparselens_token_cap_dropped": dropped_cap,
    }
    if transcoder:
        metadata.update(hook_name_out=hookpoint_to_tl(cfg.target_hookpoint),
                        sparselens_hookpoint_out=cfg.target_hookpoint)
    out: dict[str, Any] = {
        "architecture": arch, "d_in": cfg.d_in, "d_sae": cfg.n_latents, "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": bool(cfg.pre_encoder_bias),
        "normalize_activations": "none", "reshape_activations": "none", "metadata": metadata,
    }
    if transcoder:
        out["d_out"] = cfg.d_out
    if arch == "topk":
        out.update(k=folded.cfg.k, rescale_acts_by_decoder_norm=False)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS_FILE, save({k: v.float().contiguous()
                                                    for k, v in tensors.items()}))
    atomic_write_json(folder / CFG_FILE, out)
    return folder


def _export_tensors(d: Dictionary) -> tuple[str, dict[str, Tensor]]:
    """(SAELens architecture, SAELens state dict) for a folded sparselens dictionary."""
    cfg = d.cfg
    transcoder = not cfg.pre_encoder_bias and (cfg.d_out != cfg.d_in or cfg.skip_connection)
    kind = EXPORT_KINDS.get(d.architecture)
    if kind is None or (transcoder and kind not in ("standard", "jumprelu")):
        raise ValueError(f"the sparselens variant {d.architecture!r} has no SAELens "
                         f"equivalent{' as a transcoder' if transcoder else ''}; exportable: "
                         f"{sorted(EXPORT_KINDS)} (transcoders: ReLU and JumpReLU only)")
    if cfg.skip_connection and not transcoder:
        raise ValueError("SAELens has no autoencoder with a skip connection; only transcoders "
                         "(pre_encoder_bias=False) can be exported with one")
    tensors = {name: getattr(d, name).detach().float()
               for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if kind == "jumprelu":
        tensors["threshold"] = _thresholds(d)
    if kind == "gated":
        tensors.update(b_gate=tensors.pop("b_enc"), b_mag=d.b_mag.detach().float(),
                       r_mag=d.r_mag.detach().float())
    arch = kind
    if transcoder:
        arch = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}[kind]
        if cfg.skip_connection:
            arch = arch.replace("transcoder", "skip_transcoder")
            tensors["W_skip"] = d.W_skip.detach().float().T.contiguous()
    _check_same_codes(d, arch, tensors)
    return arch, tensors


def _thresholds(d: Dictionary) -> Tensor:
    """Per-latent thresholds; SAELens applies ``relu(pre) * (pre > threshold)``, which matches
    sparselens's ``pre * (pre > threshold)`` only for thresholds >= 0."""
    threshold = d.threshold.detach().float()
    if bool(torch.isnan(threshold).any()):
        raise ValueError(f"the {d.architecture!r} dictionary has no inference threshold yet "
                         "(NaN: it was not trained long enough to estimate one); train longer "
                         "before exporting")
    if bool((threshold < 0).any()):
        raise ValueError("SAELens's JumpReLU zeroes negative pre-activations, so thresholds "
                         f"below zero (min {float(threshold.min()):.3g}) cannot be exported "
                         "exactly")
    return threshold.expand(d.cfg.n_latents).clone() if threshold.dim() == 0 else threshold


def _check_same_codes(d: Dictionary, arch: str, tensors: dict[str, Tensor]) -> None:
    """Refuse to write a file whose SAELens encode would differ from sparselens's own."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, d.cfg.d_in, generator=gen)
    x = x * torch.tensor([0.1, 1.0, 10.0]).repeat_interleave(32)[:, None]
    with torch.no_grad():
        ours = d.float().encode(x)
        theirs = saelens_encode(arch, tensors, x, k=getattr(d.cfg, "k", None),
                                apply_b_dec=bool(d.cfg.pre_encoder_bias))
    # A different mapping changes many codes; rounding can flip only a rare near-tie.
    mismatched = ~torch.isclose(ours, theirs, rtol=1e-4, atol=1e-5)
    if float(mismatched.float().mean()) > MAX_MISMATCH:
        raise ValueError(f"internal check failed: the {d.architecture!r} dictionary would "
                         f"encode differently as SAELens {arch!r}; it cannot be exported")


def saelens_encode(arch: str, tensors: dict[str, Tensor], x: Tensor, k: int | None,
                   apply_b_dec: bool) -> Tensor:
    """SAELens's inference encode for a raw state dict (normalize_activations="none")."""
    if apply_b_dec and "transcoder" not in arch:
        x = x - tensors["b_dec"]
    if arch == "gated":
        base = x @ tensors["W_enc"]
        gate = (base + tensors["b_gate"]) > 0
        return gate * torch.relu(base * tensors["r_mag"].exp() + tensors["b_mag"])
    pre = x @ tensors["W_enc"] + tensors["b_enc"]
    if arch == "topk":
        values, indices = pre.topk(int(k or 0), dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
    if "jumprelu" in arch:
        return torch.relu(pre) * (pre > tensors["threshold"])
    return torch.relu(pre)
