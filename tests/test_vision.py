"""Vision: image sources, loading vision models from folders, and patch-token harvesting into
the ordinary cache (tiny ViTs built in code, random weights) through training and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sparselens.data.cache import ActivationCache
from sparselens.data.harvest import HarvestConfig
from sparselens.data.image_harvest import harvest_images, model_transform, prefix_tokens
from sparselens.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    builtin_images,
    folder_images,
    image_source,
)
from sparselens.models.source import LoadedModel
from sparselens.models.vision import input_settings, load_vision_model

Image = pytest.importorskip("PIL.Image")
SIZE, PATCH = 16, 4  # a 4 x 4 patch grid
FP32 = HarvestConfig(storage_dtype="float32", batch_size=4, shard_tokens=200, progress=False,
                     heldout_fraction=0.2)


def tiny_dinov2(registers: int = 0, seed: int = 0) -> LoadedModel:
    """A 2-block DINOv2 (Dinov2WithRegisters when `registers`), width 32, patch 4."""
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    torch.manual_seed(seed)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                  patch_size=PATCH, image_size=SIZE)
    model = (Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers,
                                                                **common))
             if registers else Dinov2Model(Dinov2Config(**common)))
    return LoadedModel(model.eval().requires_grad_(False), tokenizer=None, name="tiny-dinov2")


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` small RGB pictures: a coloured rectangle on a noisy background, varied sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(16, 40)), int(rng.integers(16, 40))
        pixels = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        pixels[top:top + h // 2, left:left + w // 2] = rng.integers(100, 255, 3)
        path = folder / f"img{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


# --- image sources ----------------------------------------------------------------------------

def test_transform_resizes_crops_and_normalises() -> None:
    transform = ImageTransform(size=28, patch_size=14)
    out = transform(Image.new("RGB", (90, 40), (255, 0, 51)))
    assert out.shape == (3, 28, 28) and transform.grid == 2
    expected = (torch.tensor([1.0, 0.0, 0.2]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD)
    torch.testing.assert_close(out[:, 10, 10], expected, rtol=0, atol=1e-5)
    # centre crop: a wide image keeps its middle columns
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255
    centre = ImageTransform(size=10)(Image.fromarray(wide))
    assert (centre[0] > 0).all()  # every pixel of the crop comes from the white middle


def test_transform_size_must_fit_the_patch_grid() -> None:
    with pytest.raises(ValueError, match="225 is not a multiple of the model's patch size 14; "
                                         "use 224 or 238"):
        ImageTransform(size=225, patch_size=14)


def test_folder_is_sorted_recursive_and_skips_hidden_files(tmp_path) -> None:
    write_images(tmp_path / "b", 2)
    write_images(tmp_path / "a", 1)
    (tmp_path / ".thumbs").mkdir()
    (tmp_path / ".thumbs" / "x.txt").write_text("not an image")
    records = folder_images(tmp_path)
    assert [r.key for r in records] == ["a/img000.jpg", "b/img000.jpg", "b/img001.png"]
    assert records[2].load().size == Image.open(tmp_path / "b" / "img001.png").size
    assert [r.key for r in image_source(str(tmp_path))] == [r.key for r in records]


def test_folder_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files; put images in it"):
        folder_images(tmp_path / "empty")
    write_images(tmp_path / "mixed", 2)
    (tmp_path / "mixed" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt is not an image Pillow can read"):
        folder_images(tmp_path / "mixed")
    with pytest.raises(ValueError, match="unknown built-in image set 'cats'"):
        image_source("builtin:cats")


def test_builtin_sets_ship_with_the_dependencies() -> None:
    pytest.importorskip("sklearn")
    photos = builtin_images("photos")
    assert [r.key for r in photos] == ["photos/china.jpg", "photos/flower.jpg",
                                       "photos/grace_hopper.jpg"]
    assert all(min(r.load().size) >= 400 for r in photos)
    digits = image_source("builtin:digits")
    assert len(digits) == 1797 and {r.label for r in digits} == set(range(10))
    assert digits[0].load().size == (8, 8)


# --- models -----------------------------------------------------------------------------------

def test_vision_model_loads_from_a_folder_with_its_preprocessor(tmp_path) -> None:
    tiny = tiny_dinov2()
    tiny.model.save_pretrained(tmp_path / "m")
    loaded = load_vision_model(str(tmp_path / "m"))
    assert type(loaded.model).__name__ == "Dinov2Model" and not loaded.model.training
    assert input_settings(loaded.model)["image_mean"] == list(IMAGENET_MEAN)
    (tmp_path / "m" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    settings = input_settings(load_vision_model(str(tmp_path / "m")).model)
    assert settings == {"patch_size": PATCH, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    with pytest.raises(FileNotFoundError, match="nor a local transformers model folder"):
        load_vision_model(str(tmp_path / "nothing"))


def test_prefix_tokens_counts_cls_and_registers() -> None:
    transform = ImageTransform(size=SIZE, patch_size=PATCH)
    assert prefix_tokens(tiny_dinov2(), transform) == 1
    assert prefix_tokens(tiny_dinov2(registers=3), transform) == 4


# --- harvest -> train -> evaluate ---------------------------------------------------------------

@pytest.mark.parametrize("registers", [0, 2])
def test_patch_rows_equal_a_plain_forward(tmp_path, registers) -> None:
    loaded = tiny_dinov2(registers)
    records = folder_images(write_images(tmp_path / "imgs", 6)[0].parent)
    manifest = harvest_images(loaded, records, ["resid.0"], tmp_path / "cache", size=SIZE,
                              cfg=FP32, source="imgs")
    prefix, grid = 1 + registers, SIZE // PATCH
    assert manifest["corpus"]["prefix_tokens"] == prefix and manifest["corpus"]["grid"] == grid
    cache = ActivationCache.open(tmp_path / "cache")
    assert cache.n_tokens == 6 * grid * grid and cache.n_sequences == 6
    transform = model_transform(loaded, SIZE)
    pixels = torch.stack([transform(r.load()) for r in records])
    hidden = loaded.model(pixel_values=pixels, output_hidden_states=True).hidden_states[1]
    batch = next(cache.batches(10_000, split="all"))
    assert batch.token_ids.tolist() == (batch.positions - prefix).tolist()  # patch index
    torch.testing.assert_close(batch.acts["resid.0"], hidden[batch.seq_ids, batch.positions],
                               rtol=1e-5, atol=1e-5)
    assert set(batch.positions.tolist()) == set(range(prefix, prefix + grid * grid))


def test_harvest_resumes_and_refuses_another_source(tmp_path) -> None:
    loaded = tiny_dinov2()
    records = folder_images(write_images(tmp_path / "imgs", 8)[0].parent)
    small = HarvestConfig(**{**FP32.__dict__, "shard_tokens": 64})  # 4 images a shard
    partial = HarvestConfig(**{**small.__dict__, "max_shards": 1})
    first = harvest_images(loaded, records, ["resid.1"], tmp_path / "cache", SIZE, partial)
    assert not first.get("complete") and first["n_sequences"] == 4
    done = harvest_images(loaded, records, ["resid.1"], tmp_path / "cache", SIZE, small)
    assert done["complete"] and done["n_sequences"] == 8
    with pytest.raises(ValueError, match="already holds a different harvest"):
        harvest_images(loaded, records[:5], ["resid.1"], tmp_path / "cache", SIZE, small)


def test_harvest_train_evaluate_end_to_end(tmp_path) -> None:
    from sparselens.cli.main import main
    from sparselens.evaluation import reconstruction_metrics
    from sparselens.io.native import load_dictionary

    loaded = tiny_dinov2()
    records = folder_images(write_images(tmp_path / "imgs", 40)[0].parent)
    harvest_images(loaded, records, ["resid.1"], tmp_path / "cache", SIZE, FP32)
    assert main(["train", str(tmp_path / "cache"), "--out", str(tmp_path / "sae"),
                 "--architecture", "topk", "--n-latents", "64", "--dictionary", '{"k": 4}',
                 "--n-tokens", "6000", "--batch-size", "64", "--log.progress", "false"]) == 0
    sae = load_dictionary(tmp_path / "sae")
    cache = ActivationCache.open(tmp_path / "cache")
    heldout = list(cache.batches(256, split="heldout"))
    assert heldout, "the held-out split holds whole images"
    trained = reconstruction_metrics(sae, heldout, "resid.1")
    torch.manual_seed(0)
    untrained = type(sae)(sae.cfg)
    baseline = reconstruction_metrics(untrained, heldout, "resid.1")
    assert trained["l0"] <= 4 + 1e-6
    assert trained["fvu"] < 0.5 * baseline["fvu"] and trained["fvu"] < 0.5


def test_harvest_images_command(tmp_path, capsys) -> None:
    from sparselens.cli.main import main

    tiny_dinov2().model.save_pretrained(tmp_path / "model")
    write_images(tmp_path / "imgs", 5)
    assert main(["harvest-images", str(tmp_path / "imgs"), "--model", str(tmp_path / "model"),
                 "--out", str(tmp_path / "cache"), "--size", str(SIZE), "--max-images", "3",
                 "--hookpoints", "resid.0", "resid.1"]) == 0, capsys.readouterr().err
    assert "48 patch rows from 3 images (4x4 patches)" in capsys.readouterr().out
    cache = ActivationCache.open(tmp_path / "cache")
    assert cache.hookpoints == ["resid.0", "resid.1"]
    assert cache.manifest["corpus"]["keys"] == ["img000.jpg", "img001.png", "img002.jpg"]


def labelled_records(n: int, seed: int = 0) -> list:
    """Noisy pictures with a red (label 0) or blue (label 1) square somewhere."""
    from sparselens.data.images import ImageRecord

    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        pixels = rng.integers(0, 80, (SIZE, SIZE, 3)).astype(np.uint8)
        top, left = (int(v) for v in rng.integers(0, SIZE // 2, 2))
        label = i % 2
        pixels[top:top + SIZE // 2, left:left + SIZE // 2] = (230, 30, 30) if label == 0 \
            else (30, 30, 230)
        image = Image.fromarray(pixels)
        records.append(ImageRecord(key=f"x{i}", load=lambda image=image: image, label=label))
    return records


def test_linear_probe_reads_labels_from_mean_patches(tmp_path) -> None:
    from sparselens.evaluation.image_probing import linear_probe, probe_cache

    cfg = HarvestConfig(**{**FP32.__dict__, "heldout_fraction": 0.3})
    records = labelled_records(60)
    harvest_images(tiny_dinov2(), records, ["resid.1"], tmp_path / "cache", SIZE, cfg)
    cache = ActivationCache.open(tmp_path / "cache")
    result = probe_cache(cache, "resid.1")
    assert result["n_test"] >= 8 and result["n_train"] + result["n_test"] == 60
    assert result["accuracy"] >= 0.9 > result["majority_baseline"]
    # the same features with the labels shuffled: no better than chance
    from sparselens.evaluation.image_probing import image_features

    features = image_features(cache, "resid.1")
    torch.manual_seed(0)
    labels = torch.tensor([r.label for r in records])[torch.randperm(60)]
    train = ~cache.is_heldout(torch.arange(60))
    shuffled = linear_probe(features, labels, train)
    assert shuffled["accuracy"] < 0.8
    with pytest.raises(ValueError, match="no image labels"):
        harvest_images(tiny_dinov2(), folder_images(write_images(tmp_path / "u", 3)[0].parent),
                       ["resid.1"], tmp_path / "unlabelled", SIZE, FP32)
        probe_cache(ActivationCache.open(tmp_path / "unlabelled"), "resid.1")
