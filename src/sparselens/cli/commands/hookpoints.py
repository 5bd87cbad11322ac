"""``sparselens hookpoints MODEL``: list every hookpoint with its width."""

from __future__ import annotations

from dataclasses import dataclass

from sparselens.cli.options import positional

NAME = "hookpoints"
HELP = "List a model's hookpoints (module paths and shorthands) with their widths."


@dataclass
class Config:
    model: str = positional("gemma-3-270m")
    """Embedded model name, local Hugging Face directory, or .gguf file."""
    filter: str | None = None
    """Only list module paths containing this text."""


def run(cfg: Config) -> int:
    import torch

    from sparselens.models.hookpoints import SHORTHANDS, find_blocks, list_hookpoints, resolve
    from sparselens.models.source import load_model

    loaded = load_model(cfg.model)
    ids = torch.tensor([[loaded.tokenizer.bos_token_id or 1, 2]], device=loaded.device)
    for name, width in list_hookpoints(loaded.model, input_ids=ids):
        if cfg.filter is None or cfg.filter in name:
            print(f"{name:60s} {width if width is not None else '-'}")
    _, blocks = find_blocks(loaded.model)
    print(f"\nshorthands (layers 0..{len(blocks) - 1}):")
    for short in SHORTHANDS:
        try:
            print(f"  {short}.L -> {resolve(loaded.model, f'{short}.0')[0]} ...")
        except ValueError as err:
            print(f"  {short}.L unavailable: {err}")
    return 0
