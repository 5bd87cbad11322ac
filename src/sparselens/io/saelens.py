"""Read the SAELens format (``cfg.json`` + ``sae_weights.safetensors``) as sparselens variants.

Reading reproduces SAELens's inference ``encode``/``decode`` exactly:

- ``apply_b_dec_to_input`` becomes ``pre_encoder_bias``; transcoders never subtract ``b_dec``.
- ``rescale_acts_by_decoder_norm`` (TopK family) multiplies pre-activations by the decoder row
  norms and divides codes by them before decoding; folding the norms into the weights gives the
  same codes and outputs with unit-norm rows, which is what SAELens itself saves.
- ``normalize_activations="expected_average_only_in"`` means the SAE works on ``x * s``
  and its output is divided by ``s``; SAELens keeps ``s`` outside the file (its release list, or
  ``activation_scaler.json`` beside a training checkpoint), so it becomes ``input_scale =
  output_scale = s``. Per-token modes (``constant_norm_rescale``, ``layer_norm``) and unfolded
  whitening cannot be constant scales and are refused.
- JumpReLU masks ``relu(pre)`` by ``pre > threshold``; a negative threshold behaves as zero, so
  thresholds are clamped at zero. BatchTopK and Matryoshka SAEs are saved by SAELens as JumpReLU
  files (their inference form); their *training* checkpoints (``topk_threshold``) load as
  sparselens ``batchtopk`` / ``matryoshka``.

Writing is in `saelens_export`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from sparselens.core.atomic import read_json
from sparselens.io.foreign import (
    ForeignDictionary,
    build,
    fold_decoder_norms,
    read_safetensors,
    require,
)
from sparselens.io.gemmascope import module_hookpoint

if TYPE_CHECKING:
    from sparselens.dictionaries.base import Dictionary

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"

# SAELens architecture -> (sparselens variant, is a transcoder, has a skip connection)
ARCHITECTURES: dict[str, tuple[str, bool, bool]] = {
    "standard": ("relu", False, False),
    "topk": ("topk", False, False),
    "jumprelu": ("jumprelu", False, False),
    "gated": ("gated", False, False),
    "batchtopk": ("batchtopk", False, False),
    "matryoshka_batchtopk": ("matryoshka", False, False),
    "transcoder": ("relu", True, False),
    "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}
ENCODER_RESCALED = ("topk", "batchtopk", "matryoshka_batchtopk")
"""Architectures whose ``rescale_acts_by_decoder_norm`` flag changes the encode path."""

# TransformerLens hook names <-> sparselens hookpoint shorthands, for the common sites.
_TL_HOOKS = {"hook_resid_post": "resid", "hook_resid_pre": "resid_pre",
             "hook_mlp_out": "mlp_out", "hook_attn_out": "attn_out"}


def load_saelens(path: str | os.PathLike, *, norm_scaling_factor: float | None = None,
                 dtype: str = "float32") -> Dictionary:
    """Load a SAELens SAE or transcoder folder as a sparselens dictionary.

    `norm_scaling_factor` is needed only for ``normalize_activations="expected_average_only_in"``
    files without an ``activation_scaler.json`` beside them (pass 1.0 if your activations are
    already scaled).
    """
    folder = Path(path)
    cfg = _read_config(folder)
    source = folder / WEIGHTS_FILE
    state = read_safetensors(source)
    saved = _saved_scaling_factor(folder)
    return build(translate(cfg, state, source, norm_scaling_factor, saved), dtype=dtype)


def translate(cfg: dict[str, Any], state: dict[str, Tensor], source: Path,
              norm_scaling_factor: float | None = None,
              saved_scaling_factor: float | None = None) -> ForeignDictionary:
    """SAELens config and state dict -> sparselens variant, config and tensors.

    `norm_scaling_factor` is the user's; `saved_scaling_factor` the one found beside the file.
    """
    arch = _architecture(cfg, source)
    variant, transcoder, skip = ARCHITECTURES[arch]
    tensors = _tensors(arch, cfg, dict(state), source)
    meta = {**cfg, **(cfg.get("metadata") or {})}
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    scale = _input_scale(cfg, source, norm_scaling_factor, saved_scaling_factor, transcoder)
    config: dict[str, Any] = {
        "d_in": d_in, "n_latents": d_sae,
        "d_out": int(cfg.get("d_out", d_in)) if transcoder else d_in,
        "pre_encoder_bias": bool(cfg.get("apply_b_dec_to_input", True)) and not transcoder,
        "skip_connection": skip, "input_scale": scale, "output_scale": scale,
        "hookpoint": _hookpoint(meta, ""),
        "target_hookpoint": _hookpoint(meta, "_out"),
        "model": meta.get("model_name"),
    }
    if variant in ("topk", "batchtopk", "matryoshka"):
        config["k"] = _integer_k(cfg, source)
    if variant in ("batchtopk", "matryoshka"):
        config["token_cap"] = None  # SAELens has no per-token cap
    if variant == "matryoshka":
        config["group_sizes"] = _group_sizes(cfg, d_sae, source)
    return ForeignDictionary(source=source, architecture=variant, config=config, tensors=tensors)


def _read_config(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise FileNotFoundError(f"SAELens checkpoint {folder} is not a directory; pass the "
                                f"folder holding {CFG_FILE} and {WEIGHTS_FILE}")
    cfg = read_json(folder / CFG_FILE, "SAELens config")
    if not isinstance(cfg, dict):
        raise ValueError(f"{folder / CFG_FILE} is not a JSON object; is this an SAELens cfg?")
    missing = [key for key in ("d_in", "d_sae") if key not in cfg]
    if missing:
        raise ValueError(f"{folder / CFG_FILE} lacks {missing}; it is not an SAELens config "
                         "(SAELens writes d_in and d_sae in every cfg.json)")
    return cfg


def _saved_scaling_factor(folder: Path) -> float | None:
    """The factor SAELens's trainer writes beside its checkpoints, if any."""
    scaler = folder / SCALER_FILE
    if not scaler.exists():
        return None
    data = read_json(scaler, "SAELens activation scaler")
    return data.get("scaling_factor") if isinstance(data, dict) else None


def _architecture(cfg: dict[str, Any], source: Path) -> str:
    """The SAELens architecture name, including configs written before SAELens 6."""
    arch = cfg.get("architecture")
    if arch is None:
        act = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
        arch = "topk" if act == "topk" else "standard"
    if arch not in ARCHITECTURES:
        raise ValueError(f"{source.parent / CFG_FILE}: SAELens architecture {arch!r} is not "
                         f"supported (supported: {sorted(ARCHITECTURES)}); convert it to one "
                         "of these in SAELens first")
    return arch


def _tensors(arch: str, cfg: dict[str, Any], state: dict[str, Tensor],
             source: Path) -> dict[str, Tensor]:
    variant, _, skip = ARCHITECTURES[arch]
    hint = f"the file does not match SAELens architecture {arch!r} named in {CFG_FILE}"
    require(state, ["W_enc", "W_dec", "b_dec"] + (["W_skip"] if skip else []), source, hint)
    out = {name: state[name].float() for name in ("W_enc", "W_dec", "b_dec")}
    if variant == "gated":
        require(state, ["b_gate", "b_mag", "r_mag"], source, hint)
        out.update(b_enc=state["b_gate"], b_mag=state["b_mag"], r_mag=state["r_mag"])
    else:
        require(state, ["b_enc"], source, hint)
        out["b_enc"] = state["b_enc"]
    if variant == "jumprelu":
        if "log_threshold" in state:  # checkpoints written before SAELens 6
            state["threshold"] = state["log_threshold"].exp()
        require(state, ["threshold"], source, hint)
        out["threshold"] = state["threshold"].float().clamp_min(0)
    if variant in ("batchtopk", "matryoshka"):
        require(state, ["topk_threshold"], source, hint)
        out["threshold"] = state["topk_threshold"].float().clamp_min(0).reshape(())
    if skip:
        out["W_skip"] = state["W_skip"].T  # SAELens stores (d_out, d_in)
    for key in ("finetuning_scaling_factor", "scaling_factor"):
        if key in state:  # older releases scale codes before decoding
            out["W_dec"] = out["W_dec"] * state[key].float()[:, None]
    if arch in ENCODER_RESCALED and cfg.get("rescale_acts_by_decoder_norm", False):
        fold_decoder_norms(out)
    return {name: t.float() for name, t in out.items()}


def _input_scale(cfg: dict[str, Any], source: Path, factor: float | None,
                 saved: float | None, transcoder: bool) -> float:
    """The constant input/output scale implied by ``normalize_activations``."""
    mode = cfg.get("normalize_activations", "none")
    if isinstance(mode, bool) or mode is None:  # configs before SAELens 3
        mode = "expected_average_only_in" if mode else "none"
    cfg_file = source.parent / CFG_FILE
    if mode == "none":
        if factor is not None:
            raise ValueError(f"{cfg_file} says normalize_activations='none', so a "
                             "norm_scaling_factor does not apply; leave it unset")
        return 1.0
    if mode in ("constant_norm_rescale", "layer_norm"):
        raise ValueError(f"{cfg_file}: normalize_activations={mode!r} rescales every token by "
                         "its own statistics, which sparselens cannot express as constant "
                         "scales; use an SAE trained with 'expected_average_only_in' or 'none'")
    if mode == "covariance_whitening":
        raise ValueError(f"{cfg_file}: the whitening of this checkpoint is not folded into its "
                         "weights; fold it in SAELens (sae.fold_activation_whitening, as its "
                         "trainer does at the end of training) and save again")
    if mode != "expected_average_only_in":
        raise ValueError(f"{cfg_file}: unknown normalize_activations={mode!r}")
    if transcoder:
        raise ValueError(f"{cfg_file}: a transcoder with normalize_activations={mode!r} has no "
                         "defined output scale; fold the factor into the weights in SAELens")
    factor = factor if factor is not None else saved
    if factor is None:
        raise ValueError(f"{cfg_file}: normalize_activations='expected_average_only_in' but the "
                         f"scaling factor is not stored with the SAE (no {SCALER_FILE}); pass "
                         "norm_scaling_factor (SAELens lists it per release as "
                         "norm_scaling_factor), or 1.0 if your activations are already scaled")
    factor = float(factor)
    if not factor > 0 or factor == float("inf"):
        raise ValueError(f"{cfg_file}: norm scaling factor must be positive and finite, "
                         f"got {factor}")
    return factor


def _integer_k(cfg: dict[str, Any], source: Path) -> int:
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    if k is None or float(k) != int(k) or int(k) <= 0:
        raise ValueError(f"{source.parent / CFG_FILE}: TopK-style SAE needs a positive integer "
                         f"'k', got {k!r}")
    return int(k)


def _group_sizes(cfg: dict[str, Any], d_sae: int, source: Path) -> list[int]:
    """SAELens stores cumulative Matryoshka widths; sparselens stores each group's size."""
    widths = [int(w) for w in cfg.get("matryoshka_widths") or []]
    if widths and widths[-1] != d_sae:
        widths.append(d_sae)  # SAELens adds the full width as the last level
    sizes = [b - a for a, b in zip([0, *widths], widths)]
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"{source.parent / CFG_FILE}: matryoshka_widths {widths} must be "
                         f"strictly increasing positive widths up to d_sae={d_sae}")
    return sizes


def _hookpoint(meta: dict[str, Any], suffix: str) -> str | None:
    """Ours if we wrote the file, else the Hugging Face module name, else TransformerLens's."""
    return (meta.get(f"sparselens_hookpoint{suffix}")
            or module_hookpoint(meta.get(f"hf_hook_name{suffix}"))
            or hookpoint_from_tl(meta.get(f"hook_name{suffix}")
                                 or meta.get(f"hook_point{suffix}")))  # before SAELens 6


def hookpoint_from_tl(name: str | None) -> str | None:
    """``blocks.6.hook_resid_post`` -> ``resid.6``; other names pass through unchanged."""
    if not name:
        return None
    match = re.fullmatch(r"blocks\.(\d+)\.(hook_\w+)", name)
    if match and match.group(2) in _TL_HOOKS:
        return f"{_TL_HOOKS[match.group(2)]}.{match.group(1)}"
    return name


def hookpoint_to_tl(name: str | None) -> str | None:
    """``resid.6`` -> ``blocks.6.hook_resid_post`` so SAELens-based tools find the site."""
    if not name:
        return None
    inverse = {short: hook for hook, short in _TL_HOOKS.items()}
    match = re.fullmatch(r"(\w+)\.(\d+)", name)
    if match and match.group(1) in inverse:
        return f"blocks.{match.group(2)}.{inverse[match.group(1)]}"
    return name
