"""Image sources for vision models: a folder of images, or a built-in offline set.

A source is a list of `ImageRecord`s in a fixed order (sorted relative paths for a folder),
so image ``i`` is the same picture in every run: a harvest stores it as sequence ``i``.
`ImageTransform` turns a picture into the ``(3, size, size)`` float tensor a ViT takes:
shorter side resized to `size` (bicubic), centre crop, scaled to [0, 1], normalised by the
model's mean/std (ImageNet's by default, what DINOv2 and most ViTs were trained with).

The built-in sets are files and arrays that ship inside packages this project already
installs, so they exist on every machine without a download (docs/vision.md lists them):
``builtin:photos`` (scikit-learn's two sample photos and matplotlib's Grace Hopper portrait)
``builtin:digits`` (scikit-learn's 1,797 labelled 8x8 handwritten digits), and the rendered
``builtin:glyphs`` (26 letters) and ``builtin:fonts`` (5 type families) of `data.glyphs`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sparselens.data.glyphs import GLYPH_SETS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source: a stable key (path or set/index), an optional label, a loader."""

    key: str
    load: Callable[[], Any]
    """Returns the picture as a PIL image (opened lazily: a source of thousands stays cheap)."""
    label: int | None = None


@dataclass(frozen=True)
class ImageTransform:
    """Resize, centre-crop and normalise a picture into a model's input tensor."""

    size: int = 224
    """Side of the square input in pixels; a multiple of the model's patch size."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    patch_size: int | None = None
    """The model's patch size, if known: `size` must then be a multiple of it."""

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"image size must be positive, got {self.size}")
        if self.patch_size and self.size % self.patch_size:
            lower = max(self.patch_size, self.size // self.patch_size * self.patch_size)
            raise ValueError(f"image size {self.size} is not a multiple of the model's patch "
                             f"size {self.patch_size}; use {lower} or "
                             f"{lower + self.patch_size}")

    @property
    def grid(self) -> int | None:
        """Patches per side, if the patch size is known."""
        return self.size // self.patch_size if self.patch_size else None

    def fit(self, image: Any) -> Any:
        """The RGB picture the model sees (resized, centre-cropped), before normalisation;
        the report draws heat maps over it, so patch (r, c) is where the model saw it."""
        from PIL import Image

        image = image.convert("RGB")
        scale = self.size / min(image.size)
        width, height = (max(self.size, round(side * scale)) for side in image.size)
        image = image.resize((width, height), Image.Resampling.BICUBIC)
        left, top = (width - self.size) // 2, (height - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def __call__(self, image: Any) -> Tensor:
        image = self.fit(image)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        return (pixels - mean[:, None, None]) / std[:, None, None]


def image_source(spec: str | Path) -> list[ImageRecord]:
    """Records from ``builtin:<name>`` or a folder of images."""
    text = str(spec)
    if text.startswith(BUILTIN_PREFIX):
        return builtin_images(text.removeprefix(BUILTIN_PREFIX))
    return folder_images(text)


def folder_images(folder: str | Path) -> list[ImageRecord]:
    """Every file under `folder` (recursively, hidden files skipped) in sorted path order.

    Each file must be an image Pillow can read; this is checked here (headers only), so a
    bad file is named before any model runs rather than hours into a harvest.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (or is not a folder); "
                                "give a folder of images or a built-in set "
                                f"({', '.join(BUILTIN_PREFIX + n for n in BUILTIN_SETS)})")
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"image folder {root} holds no files; put images in it (any format "
                         "Pillow reads: JPEG, PNG, WebP, ...)")
    for path in files:
        _check_readable(path)
    return [ImageRecord(key=str(path.relative_to(root)), load=_opener(path)) for path in files]


def _check_readable(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path} is not an image Pillow can read ({error}); remove it from "
                         "the folder or convert it") from error


def _opener(path: Path) -> Callable[[], Any]:
    def load() -> Any:
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            return image
    return load


def _photos() -> list[ImageRecord]:
    """scikit-learn's sample photos and matplotlib's sample portrait, as files on disk."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    files = [Path(p) for p in load_sample_images().filenames]
    files.append(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return [ImageRecord(key=f"photos/{path.name}", load=_opener(path)) for path in files]


def _digits() -> list[ImageRecord]:
    """scikit-learn's handwritten digits: 8x8 grey levels 0..16, labels 0..9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)

    def loader(index: int) -> Callable[[], Any]:
        def load() -> Any:
            from PIL import Image

            return Image.fromarray(pixels[index])  # uint8 2-D: grey ("L")
        return load

    return [ImageRecord(key=f"digits/{i:04d}", load=loader(i), label=int(label))
            for i, label in enumerate(digits.target)]


def _rendered(name: str) -> Callable[[], list[ImageRecord]]:
    """A `sparselens.data.glyphs` set: pictures drawn on load, from the index alone."""
    def records() -> list[ImageRecord]:
        glyph_set = GLYPH_SETS[name]
        return [ImageRecord(key=f"{name}/{i:05d}", load=functools.partial(glyph_set.render, i),
                            label=glyph_set.label(i)) for i in range(glyph_set.n_images)]
    return records


BUILTIN_SETS: dict[str, Callable[[], list[ImageRecord]]] = {
    "photos": _photos, "digits": _digits, "glyphs": _rendered("glyphs"),
    "fonts": _rendered("fonts")}


def builtin_images(name: str) -> list[ImageRecord]:
    """A built-in offline image set by name (see `BUILTIN_SETS`)."""
    if name not in BUILTIN_SETS:
        raise ValueError(f"unknown built-in image set {name!r}; choose one of "
                         f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_SETS)}")
    try:
        return BUILTIN_SETS[name]()
    except ImportError as error:
        raise ImportError(f"the built-in image set {name!r} reads files from scikit-learn and "
                          "matplotlib; install them with pip install 'sparselens[vision]'"
                          ) from error
