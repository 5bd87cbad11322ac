"""Image examples on the viewer's feature page: the top images of a latent with heat maps.

Read from the ``images.safetensors`` / ``images.json`` pair next to a dictionary's example
store (written by `interpretation.store.load_or_collect` and the report for image caches).
Pictures are reloaded from the cache's image source and sent as ``data:`` URIs (the CSP
allows ``img-src data:``), with the overlay PNGs beside them; the page script is the
report's ``images.js``. Loaded once per example store and kept (a few MB for thousands of
latents); pictures are cached per image.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

from sparselens.interpretation.image_examples import ImageExamples
from sparselens.interpretation.image_render import Pictures, data_uri, feature_image_rows
from sparselens.server.store import DictionaryStore

PICTURE_SIDE = 160


def images_script() -> bytes:
    """The page script that draws image examples (shared with the static report)."""
    return resources.files("sparselens.interpretation").joinpath("assets",
                                                                 "images.js").read_bytes()


@functools.lru_cache(maxsize=16)
def _image_examples(folder: Path) -> tuple[ImageExamples, Pictures] | None:
    images = ImageExamples.load(folder)
    return None if images is None else (images, Pictures(images.description))


@functools.lru_cache(maxsize=512)
def _picture(folder: Path, seq: int) -> str | None:
    found = _image_examples(folder)
    if found is None:
        return None
    try:
        return data_uri(found[1].png(seq, PICTURE_SIDE))
    except (OSError, ValueError, ImportError, IndexError):
        return None  # the source moved: the heat map still shows, over grey


def feature_images(store: DictionaryStore, latent: int) -> dict[str, Any] | None:
    """The ``images`` part of the feature payload, or None when the store has no images."""
    if store.examples is None:
        return None
    folder = store.examples.path.parent
    found = _image_examples(folder)
    if found is None:
        return None
    images, _ = found
    rows = feature_image_rows(images, latent, with_heat=True)
    for row in rows:
        row["src"] = _picture(folder, row["image"])
    return {"grid": list(images.grid), "source": images.description.get("source"),
            "top": rows}
