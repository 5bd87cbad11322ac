"""The image part of a report: pictures as files, overlays and crops in the page data.

Hooks into `report.write_report` (``image_examples``) and the report pipeline; the page side
is ``assets/images.js``. Pictures are written once per image used (``images/imgN.png``, the
model's input crop), so a picture in the top images of many features costs one file. When the
source cannot be reloaded (an in-memory source, a moved folder) the overlays still render,
over a grey square, and the section says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparselens.interpretation.image_examples import ImageExamples
from sparselens.interpretation.image_render import Pictures, feature_image_rows
from sparselens.io.atomic import atomic_write_bytes

PICTURE_FOLDER = "images"


class PatchTokenizer:
    """Display text of an image cache's token ids, which are patch indices."""

    def decode(self, ids: list[int]) -> str:
        return f"p{ids[0]} "


def write_image_section(out: Path, images: ImageExamples, pictures: Pictures | None = None,
                        side: int | None = None) -> dict[str, Any]:
    """Write the pictures into ``out/images`` and return the page data of the section."""
    pictures = pictures or Pictures(images.description)
    used = torch.unique(images.seq_ids[images.seq_ids >= 0]).tolist()
    sources: dict[int, str | None] = {}
    problem = None
    for seq in used:
        try:
            png = pictures.png(int(seq), side)
        except (OSError, ValueError, ImportError, IndexError) as error:
            problem = f"pictures unavailable ({error}); heat maps shown over grey"
            sources = dict.fromkeys(used)
            break
        name = f"{PICTURE_FOLDER}/img{int(seq)}.png"
        atomic_write_bytes(out / name, png)
        sources[int(seq)] = name
    features = {}
    for latent in range(images.seq_ids.shape[0]):
        rows = feature_image_rows(images, latent)
        for row in rows:
            row["src"] = sources.get(row["image"])
        if rows:
            features[str(latent)] = rows
    return {"grid": list(images.grid), "size": images.description.get("size"),
            "source": images.description.get("source"), "problem": problem,
            "features": features}
