"""Harvest a vision transformer's patch tokens into the ordinary activation cache.

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


def model_transform(loaded: LoadedModel, size: int = 224) -> ImageTransform:
    """The transform a loaded vision model expects: its patch size, mean and std."""
    settings = input_settings(loaded.model)
    return ImageTransform(size=size, mean=tuple(settings["image_mean"]),
                          std=tuple(settings["image_std"]), patch_size=settings["patch_size"])


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
                 n_prefix: int) -> Iterator[ImageChunk]:
    """The images as chunks, loaded and transformed one at a time, in source order."""
    if transform.grid is None:
        raise ValueError("image chunks need the model's patch size (ImageTransform.patch_size)")
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
    n_prefix = prefix_tokens(loaded, transform)
    corpus = {"kind": "images", "source": source, "n_images": len(records),
              "size": transform.size, "mean": list(transform.mean), "std": list(transform.std),
              "patch_size": transform.patch_size, "grid": transform.grid,
              "prefix_tokens": n_prefix, "keys": [r.key for r in records],
              "labels": [r.label for r in records]}
    return harvest(loaded, image_chunks(records, transform, n_prefix), hookpoints, out_dir,
                   cfg, corpus=corpus)
