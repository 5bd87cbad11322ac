"""Rendered characters: two labelled offline image sets harder than scikit-learn's digits.

Made from the TrueType fonts matplotlib ships (DejaVu, STIX, Computer Modern), so they exist
wherever the ``vision`` extra is installed, and rendered on demand, deterministically: image
``i`` is drawn from a random generator seeded with ``(set, i)``, so it is the same picture on
every machine and in every run, and nothing is stored.

- ``glyphs``: which of the 26 capital letters it is, in any of 19 font files (4 families in
  several weights and slants, plus Computer Modern roman/sans/typewriter/bold/italic).
- ``fonts``: which of 5 type families a random capital letter is set in (DejaVu Sans,
  DejaVu Sans Mono, DejaVu Serif, STIX General, Computer Modern roman), each family in its
  own styles. Three of the five are serif faces, so this needs fine shape detail.

Every picture varies the glyph size (35-85% of the 112-pixel canvas), rotation (+-25 degrees),
position, background and ink grey levels (contrast at least 70 of 255, either polarity), and
adds Gaussian pixel noise (sigma 0-30). Labels are ``index % n_classes``: balanced by
construction (`GlyphSet.n_images` is a multiple of the class count).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CANVAS = 112
FAMILIES: dict[str, tuple[str, ...]] = {
    "DejaVu Sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
                    "DejaVuSans-BoldOblique.ttf"),
    "DejaVu Sans Mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
                         "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf"),
    "DejaVu Serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
                     "DejaVuSerif-BoldItalic.ttf"),
    "STIX General": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
                     "STIXGeneralBolIta.ttf"),
    "Computer Modern": ("cmr10.ttf", "cmb10.ttf", "cmti10.ttf"),
}
GLYPH_FONTS = (*(f for files in FAMILIES.values() for f in files), "cmss10.ttf", "cmtt10.ttf")
LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class GlyphSet:
    """A rendered set: its classes and how many pictures it has."""

    name: str
    classes: tuple[str, ...]
    n_images: int
    seed: int

    def label(self, index: int) -> int:
        return index % len(self.classes)

    def render(self, index: int) -> Any:
        """Picture `index` as a grey PIL image (the same on every call)."""
        rng = np.random.default_rng([self.seed, index])
        label = self.label(index)
        if self.name == "glyphs":
            letter, font = LETTERS[label], GLYPH_FONTS[rng.integers(len(GLYPH_FONTS))]
        else:
            files = FAMILIES[self.classes[label]]
            letter, font = LETTERS[rng.integers(26)], files[rng.integers(len(files))]
        return draw_glyph(letter, font, rng)


def font_path(name: str) -> Path:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the glyph sets use the fonts matplotlib "
                                "ships; reinstall matplotlib")
    return path


def draw_glyph(letter: str, font: str, rng: np.random.Generator) -> Any:
    """One letter, randomly sized, rotated, placed, coloured and noised."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(font_path(font)), int(CANVAS * rng.uniform(0.35, 0.85)))
    background = int(rng.integers(0, 256))
    ink = int((background + rng.integers(70, 186)) % 256)
    if abs(ink - background) < 70:  # the wrap-around landed too close: flip polarity
        ink = 255 - background if background < 128 else 0
    layer = Image.new("L", (CANVAS * 2, CANVAS * 2), 0)
    ImageDraw.Draw(layer).text((CANVAS, CANVAS), letter, font=face, fill=255, anchor="mm")
    layer = layer.rotate(float(rng.uniform(-25, 25)), resample=Image.Resampling.BICUBIC)
    box = layer.getbbox() or (0, 0, 1, 1)
    glyph = layer.crop(box)
    if max(glyph.size) > CANVAS - 4:  # keep the whole glyph on the canvas
        glyph.thumbnail((CANVAS - 4, CANVAS - 4))
    left = int(rng.integers(0, CANVAS - glyph.size[0] + 1))
    top = int(rng.integers(0, CANVAS - glyph.size[1] + 1))
    mask = np.zeros((CANVAS, CANVAS), np.float32)
    mask[top:top + glyph.size[1], left:left + glyph.size[0]] = np.asarray(glyph) / 255.0
    pixels = background + (ink - background) * mask
    pixels += rng.normal(0.0, rng.uniform(0, 30), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


GLYPH_SETS = {"glyphs": GlyphSet("glyphs", tuple(LETTERS), 26 * 80, seed=7),
              "fonts": GlyphSet("fonts", tuple(FAMILIES), 5 * 400, seed=11)}
