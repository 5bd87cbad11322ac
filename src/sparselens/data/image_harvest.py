"""Harvest a vision model's patch tokens (ViTs) or spatial positions (CNNs) into the ordinary
activation cache.

An image is one sequence: its ViT token sequence (CLS and any register tokens first, then
the patches in row-major order) plays the part of a text chunk. The prefix tokens are marked
special, so, like BOS in text, they are not stored: one cache row per patch. The cache is the
one `sparselens.data.harvest` writes (shards, manifest, held-out split by sequence, hence by
image), so `sparselens train` and the evaluation read it unchanged. In that cache

- ``seq_ids`` is the image's index in the source (`doc_ids` too),
- ``positions`` is the token's index in the ViT sequence (patch index + number of prefix tokens),
- ``token_ids`` is the patch index (row-major over the ``grid x grid`` patches),

and the manifest's ``corpus`` entry records the source, the image keys and labels, the input
size, normalisation, patch grid and prefix length, which is everything needed to map a row
back to a patch of a picture.

A CNN hookpoint's output ``(B, C, H, W)`` is read the same way with one "patch" per spatial
position: ``H * W`` rows of width ``C`` per image, row-major, no prefix (`data.taps` turns the
feature map into a token sequence). The grid is measured, not derived from a patch size, and
every requested hookpoint must have the same ``H x W``: rows stay aligned across hookpoints.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.data.images import ImageRecord, ImageTransform
from sparselens.data.taps import forward_kwargs
from sparselens.models.hookpoints import capture, resolve
from sparselens.models.source import LoadedModel
from sparselens.models.vision import input_settings


@dataclass
class ImageChunk:
    """One image as a harvest chunk (fits `sparselens.data.taps.ChunkLike`)."""

    ids: Tensor
    """``(n_tokens,)``: 0 for prefix tokens, then the patch indices 0..grid²-1."""
    special: Tensor
    """``(n_tokens,)`` bool: True for the prefix (CLS, registers), which is not stored."""
    doc_id: int
    pixel_values: Tensor
    """``(3, size, size)`` normalised picture."""


@dataclass(frozen=True)
class TokenLayout:
    """How an image's rows are laid out at the harvested hookpoints."""

    n_prefix: int
    """Tokens before the patches (CLS, registers); 0 for CNN feature maps."""
    grid: tuple[int, int]
    """Patch (ViT) or spatial (CNN) rows x columns."""
    kind: str
    """"patches" (a ViT token sequence) or "spatial" (a CNN feature map)."""

    @property
    def n_positions(self) -> int:
        return self.grid[0] * self.grid[1]


def model_transform(loaded: LoadedModel, size: int = 224) -> ImageTransform:
    """The transform a loaded vision model expects: its patch size (None for CNNs), mean, std."""
    settings = input_settings(loaded.model)
    return ImageTransform(size=size, mean=tuple(settings["image_mean"]),
                          std=tuple(settings["image_std"]), patch_size=settings["patch_size"])


@torch.no_grad()
def token_layout(loaded: LoadedModel, transform: ImageTransform,
                 hookpoints: Sequence[str]) -> TokenLayout:
    """Measure the layout on one blank image: a ``(1, T, D)`` output is a ViT sequence
    (``T - grid²`` prefix tokens, needs the patch size), a ``(1, C, H, W)`` output a CNN map."""
    resolved = [hp for spec in hookpoints for hp in resolve(loaded.model, spec)]
    blank = torch.zeros(1, 3, transform.size, transform.size,
                        dtype=next(loaded.model.parameters()).dtype, device=loaded.device)
    acts = capture(loaded.model, resolved, pixel_values=blank, **forward_kwargs(loaded.model))
    layouts, prefix = {}, None
    for hp in resolved:
        act = acts[hp]
        if act.ndim == 4:
            layouts[str(hp)] = TokenLayout(0, (int(act.shape[2]), int(act.shape[3])), "spatial")
        elif act.ndim == 3 and transform.grid is not None:
            prefix = prefix_tokens(loaded, transform) if prefix is None else prefix
            layouts[str(hp)] = TokenLayout(prefix, (transform.grid, transform.grid), "patches")
        else:
            raise ValueError(f"hookpoint {hp} gives shape {tuple(act.shape)}: neither a ViT "
                             "token sequence (batch, tokens, width) of a model with a patch size "
                             "nor a CNN feature map (batch, channels, height, width)")
    if len(set(layouts.values())) != 1:
        raise ValueError(f"the hookpoints lay images out differently ({layouts}); harvest "
                         "hookpoints with the same spatial grid together")
    return next(iter(layouts.values()))


@torch.no_grad()
def prefix_tokens(loaded: LoadedModel, transform: ImageTransform) -> int:
    """How many tokens precede the patches (CLS, registers), from the first block's input on
    one blank image: the sequence length minus the patch count."""
    if transform.grid is None:
        raise ValueError("the model config has no patch_size; per-patch harvesting needs a "
                         "vision transformer (a model whose config names its patch size)")
    (first,) = resolve(loaded.model, "resid_pre.0")
    blank = torch.zeros(1, 3, transform.size, transform.size,
                        dtype=next(loaded.model.parameters()).dtype, device=loaded.device)
    act = capture(loaded.model, [first], pixel_values=blank,
                  **forward_kwargs(loaded.model))[first]
    prefix = int(act.shape[1]) - transform.grid ** 2 if act.ndim == 3 else -1
    if prefix < 0:
        raise ValueError(f"the first block's input has shape {tuple(act.shape)}, not (1, "
                         f"prefix + {transform.grid ** 2} patches, width); is this a ViT?")
    return prefix


def image_chunks(records: Sequence[ImageRecord], transform: ImageTransform,
                 n_prefix: int, n_patches: int | None = None) -> Iterator[ImageChunk]:
    """The images as chunks, loaded and transformed one at a time, in source order
    (`n_patches`: positions per image; by default the transform's patch grid)."""
    if n_patches is None:
        if transform.grid is None:
            raise ValueError("image chunks need the model's patch size or n_patches")
        n_patches = transform.grid ** 2
    ids = torch.cat([torch.zeros(n_prefix, dtype=torch.long), torch.arange(n_patches)])
    special = torch.arange(n_prefix + n_patches) < n_prefix
    for index, record in enumerate(records):
        yield ImageChunk(ids=ids, special=special, doc_id=index,
                         pixel_values=transform(record.load()))


def harvest_images(loaded: LoadedModel, records: Sequence[ImageRecord],
                   hookpoints: Sequence[str], out_dir: str | Path, size: int = 224,
                   cfg: HarvestConfig | None = None, source: str = "") -> dict[str, Any]:
    """Write (or resume) a patch-token activation cache of `records`; returns its manifest.

    `source` names where the images came from (a folder or ``builtin:<name>``) in the
    manifest. Resuming works as for text: the same source and settings continue the cache.
    """
    if not records:
        raise ValueError("no images to harvest: the image source is empty")
    transform = model_transform(loaded, size)
    layout = token_layout(loaded, transform, hookpoints)
    corpus = {"kind": "images", "source": source, "n_images": len(records),
              "size": transform.size, "mean": list(transform.mean), "std": list(transform.std),
              "patch_size": transform.patch_size, "layout": layout.kind,
              "grid": layout.grid[0] if layout.grid[0] == layout.grid[1] else list(layout.grid),
              "grid_shape": list(layout.grid), "prefix_tokens": layout.n_prefix,
              "keys": [r.key for r in records], "labels": [r.label for r in records]}
    chunks = image_chunks(records, transform, layout.n_prefix, layout.n_positions)
    return harvest(loaded, chunks, hookpoints, out_dir, cfg, corpus=corpus)
