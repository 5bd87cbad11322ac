"""Image examples: for each feature, its top-activating images and the feature's activation on
every patch of them (the heat map a reader sees over the picture).

An image cache (`sparselens.data.image_harvest`) stores one row per patch (ViT) or spatial
position (CNN): the example store's ``seq_ids`` are image indices and ``positions`` are token
positions, ``patch = position - prefix_tokens``, row-major over the grid. This module keeps
that mapping (the cache manifest's image description) beside the example store and adds what
the store cannot hold: a whole image's activations. The top examples are patches, several of
which may come from one image, so the top images are the distinct images of the top slots in
order. Their heat maps need the feature's code on every patch of the image, which the first
pass streamed past; a second pass encodes only the rows of those images (one `searchsorted`
over the sorted image ids, as in `windows`).

Saved as ``images.safetensors`` (tables ``(n_features, n_images)``, heat maps
``(n_features, n_images, grid cells)`` in float16) and ``images.json`` (the image description:
source, keys, labels, input size, grid, prefix), next to ``examples.safetensors``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch
from sparselens.data.sites import Sites
from sparselens.dictionaries.base import Dictionary
from sparselens.interpretation.examples import ExampleSet, FeatureExamples
from sparselens.interpretation.windows import keys_in_ranges
from sparselens.io.atomic import atomic_write_bytes, atomic_write_json

IMAGES_FILE = "images.safetensors"
IMAGES_META = "images.json"
DESCRIPTION_KEYS = ("source", "keys", "labels", "size", "mean", "std", "patch_size", "layout",
                    "grid_shape", "prefix_tokens")


def is_image_corpus(corpus: Mapping[str, Any] | None) -> bool:
    """Whether a cache manifest's ``corpus`` entry describes images."""
    return bool(corpus) and corpus.get("kind") == "images"  # type: ignore[union-attr]


def image_description(corpus: Mapping[str, Any]) -> dict[str, Any]:
    """What is needed to map a row back to a patch of a picture (from the cache manifest)."""
    description = {key: corpus.get(key) for key in DESCRIPTION_KEYS}
    if description["grid_shape"] is None:  # caches harvested before CNN support: square ViT
        description["grid_shape"] = [corpus["grid"], corpus["grid"]]
    description["layout"] = description["layout"] or "patches"
    description["prefix_tokens"] = int(description["prefix_tokens"] or 0)
    return description


@dataclass
class ImageExamples:
    """Per feature, its top images with the patch of the top activation and a heat map."""

    description: dict[str, Any]
    """`image_description` of the cache: source, keys, labels, size, grid_shape, prefix."""
    seq_ids: Tensor
    """int64 ``(n_features, n_images)``: image index in the source; -1 marks an empty slot."""
    positions: Tensor
    """int64: token position of the image's strongest patch (patch + prefix_tokens)."""
    activations: Tensor
    """float32: the feature's activation there (the image's score)."""
    heat: Tensor
    """float16 ``(n_features, n_images, rows * cols)``: the feature on every patch, row-major."""

    @property
    def grid(self) -> tuple[int, int]:
        rows, cols = self.description["grid_shape"]
        return int(rows), int(cols)

    def patch(self, position: int) -> tuple[int, int]:
        """(row, column) of a token position in the grid."""
        return divmod(position - int(self.description["prefix_tokens"]), self.grid[1])

    def save(self, folder: str | os.PathLike) -> Path:
        from safetensors.torch import save

        folder = Path(folder)
        tensors = {"seq_ids": self.seq_ids, "positions": self.positions,
                   "activations": self.activations, "heat": self.heat}
        atomic_write_bytes(folder / IMAGES_FILE,
                           save({k: v.contiguous().cpu() for k, v in tensors.items()}))
        atomic_write_json(folder / IMAGES_META, self.description)
        return folder / IMAGES_FILE

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ImageExamples | None:
        """The image examples saved in `folder`, or None when it has none."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / IMAGES_META).is_file() or not (folder / IMAGES_FILE).is_file():
            return None
        tensors = load_file(str(folder / IMAGES_FILE))
        return cls(json.loads((folder / IMAGES_META).read_text()), tensors["seq_ids"],
                   tensors["positions"], tensors["activations"], tensors["heat"])


def top_images(top: ExampleSet, n_images: int) -> tuple[Tensor, Tensor, Tensor]:
    """The first `n_images` distinct images among each feature's top slots (in activation
    order), with the position and activation of their strongest patch."""
    seq = top.seq_ids
    slots = seq.shape[1]
    earlier = torch.ones(slots, slots, dtype=torch.bool).tril(-1)  # [i, j]: j before i
    repeated = ((seq[:, :, None] == seq[:, None, :]) & earlier).any(2)
    keep = (seq >= 0) & ~repeated
    rank = keep.long().cumsum(1) - 1
    chosen = keep & (rank < n_images)
    out_seq = torch.full((seq.shape[0], n_images), -1, dtype=torch.long)
    out_pos = torch.full_like(out_seq, -1)
    out_act = torch.zeros(seq.shape[0], n_images)
    rows, cols = chosen.nonzero(as_tuple=True)
    out_seq[rows, rank[rows, cols]] = seq[rows, cols]
    out_pos[rows, rank[rows, cols]] = top.positions[rows, cols]
    out_act[rows, rank[rows, cols]] = top.activations[rows, cols]
    return out_seq, out_pos, out_act


@torch.no_grad()
def collect_image_heatmaps(dictionary: Dictionary, examples: FeatureExamples,
                           batches: Iterable[ActivationBatch], corpus: Mapping[str, Any],
                           n_images: int = 6) -> ImageExamples:
    """Top `n_images` images per feature with heat maps, from a pass over `batches` (the
    image cache's rows, any order; only rows of some chosen image are encoded)."""
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    description = image_description(corpus)
    rows_n, cols_n = (int(v) for v in description["grid_shape"])
    cells, prefix = rows_n * cols_n, int(description["prefix_tokens"])
    seq, pos, act = top_images(examples.top, n_images)
    flat_slot = torch.nonzero(seq.reshape(-1) >= 0).squeeze(1)
    keys, order = seq.reshape(-1)[flat_slot].sort()
    flat_slot = flat_slot[order]
    feature_of = torch.div(flat_slot, n_images, rounding_mode="floor")
    heat = torch.zeros(seq.numel(), cells)
    sites = Sites(examples.hookpoint)
    with dictionary.evaluating():
        for batch in batches:
            row_seq = batch.seq_ids.long().cpu()
            rows, row_of_match, match = keys_in_ranges(keys, row_seq, row_seq)
            if rows.numel() == 0:
                continue
            x = sites.inputs_for(dictionary, batch)
            codes = dictionary.encode(x[rows.to(x.device)]).float().cpu()
            cell = batch.positions.long().cpu()[rows][row_of_match] - prefix
            heat[flat_slot[match], cell] = codes[row_of_match, feature_of[match]]
    return ImageExamples(description, seq, pos, act,
                         heat.reshape(seq.shape[0], n_images, cells).half())
