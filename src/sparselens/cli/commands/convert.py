"""``sparselens convert SRC OUT --to saelens|native``: move a dictionary between formats."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sparselens.cli.options import positional

NAME = "convert"
HELP = ("Convert a dictionary (sparselens, SAELens, sparsify, Gemma Scope or dictionary_learning;"
        " detected automatically) to the sparselens or SAELens format.")

InputFormat = Literal["native", "saelens", "sparsify", "gemmascope", "dictionary_learning"]


@dataclass
class Config:
    src: str | None = positional(None)
    """Folder or file of the dictionary to convert (format detected from its files)."""
    out: str | None = positional(None)
    """Folder to write the converted dictionary to."""
    to: Literal["native", "saelens"] = "native"
    """Output format: 'native' (sparselens) or 'saelens' (cfg.json + sae_weights.safetensors)."""
    format: InputFormat | None = None
    """Input format, to skip detection."""
    norm_scaling_factor: float | None = None
    """SAELens input only: the activation scaling factor of an 'expected_average_only_in' SAE."""
    overwrite: bool = False
    """Write into OUT even if it already holds files."""


def run(cfg: Config) -> int:
    from sparselens.io.detect import load_any
    from sparselens.io.native import save_dictionary
    from sparselens.io.saelens_export import save_saelens

    if not cfg.src or not cfg.out:
        raise ValueError("usage: sparselens convert SRC OUT [--to saelens|native]")
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; choose another folder "
                              "or pass --overwrite")
    options = {} if cfg.norm_scaling_factor is None else {
        "norm_scaling_factor": cfg.norm_scaling_factor}
    dictionary = load_any(cfg.src, format=cfg.format, **options)
    (save_saelens if cfg.to == "saelens" else save_dictionary)(dictionary, out)
    print(f"wrote {dictionary.architecture} dictionary ({dictionary.cfg.d_in} -> "
          f"{dictionary.cfg.n_latents} latents) to {out} in {cfg.to} format")
    return 0
