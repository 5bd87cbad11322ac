"""Pictures and heat-map overlays for image examples, drawn offline with Pillow.

A heat map is drawn as a tiny RGBA PNG with one pixel per patch (colour and opacity grow with
the activation, scaled by the feature's largest activation so a feature's images compare);
the page stretches it over the picture, and the browser's smooth scaling blends the patches.
Overlays go into the page data as ``data:`` URIs (a few hundred bytes each, allowed by the
viewer's Content Security Policy); the picture itself is a separate PNG (a file in the static
report, a ``data:`` URI in the viewer). A crop is the box of patches around the strongest one,
given in grid cells: the page shows that part of the same two images enlarged.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from sparselens.data.images import ImageRecord, ImageTransform, image_source
from sparselens.interpretation.image_examples import ImageExamples

OVERLAY_ALPHA = 210
"""Opacity (of 255) of the overlay where the feature is at its largest activation."""


def overlay_png(heat: Tensor | np.ndarray, grid: tuple[int, int], scale: float) -> bytes:
    """A ``rows x cols`` RGBA PNG: transparent where the feature is 0, opaque red-orange
    where it reaches `scale` (yellow in between)."""
    from PIL import Image

    values = np.asarray(heat, dtype=np.float32).reshape(grid)
    level = np.clip(values / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(values)
    rgba = np.zeros((*grid, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.round(220 * (1.0 - level)).astype(np.uint8)
    rgba[..., 3] = np.round(OVERLAY_ALPHA * level).astype(np.uint8)
    return png_bytes(Image.fromarray(rgba, "RGBA"))


def png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def crop_box(row: int, col: int, grid: tuple[int, int], radius: int = 1) -> list[int]:
    """``[top, left, bottom, right]`` (grid cells, end exclusive) of the ``2r+1`` square
    around a patch, shifted to stay inside the grid."""
    side_r, side_c = min(grid[0], 2 * radius + 1), min(grid[1], 2 * radius + 1)
    top = min(max(0, row - radius), grid[0] - side_r)
    left = min(max(0, col - radius), grid[1] - side_c)
    return [top, left, top + side_r, left + side_c]


class Pictures:
    """The pictures of an image cache, as the model saw them, reloaded from its source."""

    def __init__(self, description: dict[str, Any],
                 records: Sequence[ImageRecord] | None = None) -> None:
        self.description = description
        self._records = records
        self.transform = ImageTransform(size=int(description["size"]))

    def records(self) -> Sequence[ImageRecord]:
        """The source's records (loaded on first use), checked against the cache's keys."""
        if self._records is None:
            source = self.description.get("source")
            if not source:
                raise ValueError("the image cache does not name its source; pass the records")
            self._records = image_source(source)
        keys = self.description.get("keys") or []
        if [r.key for r in self._records[:len(keys)]] != list(keys):
            raise ValueError(f"the images at {self.description.get('source')!r} are not the "
                             "ones the cache was harvested from (keys differ)")
        return self._records

    def png(self, seq: int, side: int | None = None) -> bytes:
        """Image `seq` resized and centre-cropped like the model input, `side` pixels wide."""
        from PIL import Image

        picture = self.transform.fit(self.records()[seq].load())
        if side and side != picture.size[0]:
            picture = picture.resize((side, side), Image.Resampling.BICUBIC)
        return png_bytes(picture)


def feature_image_rows(images: ImageExamples, latent: int,
                       with_heat: bool = False) -> list[dict[str, Any]]:
    """The top images of `latent`, each with its overlay (``data:`` URI), strongest patch,
    crop box and, with `with_heat`, the heat map values (row-major)."""
    valid = (images.seq_ids[latent] >= 0).nonzero().squeeze(1).tolist()
    if not valid:
        return []
    heat = images.heat[latent].float()
    scale = float(heat[valid].max())
    keys = images.description.get("keys") or []
    labels = images.description.get("labels") or []
    rows = []
    for slot in valid:
        seq = int(images.seq_ids[latent, slot])
        row, col = images.patch(int(images.positions[latent, slot]))
        entry = {"image": seq, "key": keys[seq] if seq < len(keys) else str(seq),
                 "label": labels[seq] if seq < len(labels) else None,
                 "act": float(f"{float(images.activations[latent, slot]):.4g}"),
                 "patch": [row, col], "grid": list(images.grid),
                 "crop": crop_box(row, col, images.grid),
                 "overlay": data_uri(overlay_png(heat[slot], images.grid, scale))}
        if with_heat:
            entry["heat"] = [float(f"{v:.4g}") for v in heat[slot].tolist()]
        rows.append(entry)
    return rows
