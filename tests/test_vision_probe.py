"""The rendered glyph/font sets and the `sparselens probe-images` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparselens.data.glyphs import FAMILIES, GLYPH_SETS
from sparselens.data.images import image_source

pytest.importorskip("PIL.Image")


@pytest.mark.parametrize("name", ["glyphs", "fonts"])
def test_rendered_sets_are_deterministic_balanced_and_varied(name) -> None:
    records = image_source(f"builtin:{name}")
    glyph_set = GLYPH_SETS[name]
    assert len(records) == glyph_set.n_images
    counts = np.bincount([r.label for r in records])
    assert len(counts) == len(glyph_set.classes) and counts.min() == counts.max()
    first = np.asarray(records[3].load())
    assert first.shape == (112, 112) and first.dtype == np.uint8
    assert np.array_equal(first, np.asarray(records[3].load()))  # same picture every time
    pictures = [np.asarray(r.load(), dtype=np.float32) for r in records[:12]]
    assert all(p.std() > 5 for p in pictures)  # a glyph on a background, not a blank
    assert len({p.tobytes() for p in pictures}) == 12


def test_font_classes_are_the_families() -> None:
    assert GLYPH_SETS["fonts"].classes == tuple(FAMILIES)
    assert GLYPH_SETS["glyphs"].classes[0] == "A" and len(GLYPH_SETS["glyphs"].classes) == 26


def test_probe_images_command(tmp_path, capsys) -> None:
    from sparselens.cli.main import main
    from sparselens.data.harvest import HarvestConfig
    from sparselens.data.image_harvest import harvest_images
    from test_vision import SIZE, labelled_records, tiny_dinov2

    cfg = HarvestConfig(storage_dtype="float32", batch_size=8, shard_tokens=200,
                        progress=False, heldout_fraction=0.3)
    harvest_images(tiny_dinov2(), labelled_records(40), ["resid.1"], tmp_path / "cache", SIZE,
                   cfg, source="red-or-blue")
    assert main(["probe-images", str(tmp_path / "cache"), "--out",
                 str(tmp_path / "probe.json")]) == 0
    out = capsys.readouterr().out
    assert "red-or-blue at resid.1: 2 classes" in out and "activations" in out
    result = json.loads((tmp_path / "probe.json").read_text())
    counts = result["classes"]
    assert sum(counts["train"]) + sum(counts["heldout"]) == 40
    assert result["activations"]["n_test"] == sum(counts["heldout"])
    assert result["activations"]["accuracy"] >= 0.9
