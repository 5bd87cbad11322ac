"""CNNs per spatial position (a tiny transformers ResNet built in code), torchvision's error
path, and `sparselens hookpoints` on vision models."""

from __future__ import annotations

import pytest
import torch

from sparselens.data.cache import ActivationCache
from sparselens.data.harvest import HarvestConfig
from sparselens.data.image_harvest import harvest_images, model_transform, token_layout
from sparselens.data.images import folder_images
from sparselens.models.source import LoadedModel
from sparselens.models.vision import is_vision_source, load_vision_model

pytest.importorskip("PIL.Image")
from test_vision import tiny_dinov2, write_images  # noqa: E402

SIZE = 32
FP32 = HarvestConfig(storage_dtype="float32", batch_size=4, shard_tokens=200, progress=False,
                     heldout_fraction=0.2)


def tiny_resnet(folder=None) -> LoadedModel:
    """A 2-stage ResNet, widths 8 and 16: stage 0 maps a 32 px image to 8x8, stage 1 to 4x4."""
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    model = ResNetModel(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                                     depths=[1, 1], layer_type="basic")).eval()
    if folder is not None:
        model.save_pretrained(folder)
    return LoadedModel(model.requires_grad_(False), tokenizer=None, name="tiny-resnet")


def test_cnn_rows_are_the_feature_map_per_position(tmp_path) -> None:
    tiny_resnet(tmp_path / "resnet")
    loaded = load_vision_model(str(tmp_path / "resnet"))  # AutoModel from config + safetensors
    records = folder_images(write_images(tmp_path / "imgs", 5)[0].parent)
    manifest = harvest_images(loaded, records, ["resid.1"], tmp_path / "cache", SIZE, FP32,
                              source="imgs")
    corpus = manifest["corpus"]
    assert corpus["layout"] == "spatial" and corpus["grid_shape"] == [4, 4]
    assert corpus["prefix_tokens"] == 0 and corpus["grid"] == 4
    cache = ActivationCache.open(tmp_path / "cache")
    assert cache.n_tokens == 5 * 16
    pixels = torch.stack([model_transform(loaded, SIZE)(r.load()) for r in records])
    fmap = loaded.model(pixel_values=pixels, output_hidden_states=True).hidden_states[2]
    assert fmap.shape == (5, 16, 4, 4)
    batch = next(cache.batches(10_000, split="all"))
    rows, cols = batch.positions // 4, batch.positions % 4
    expected = fmap[batch.seq_ids, :, rows, cols]  # (n, C) channel vectors per position
    torch.testing.assert_close(batch.acts["resid.1"], expected, rtol=1e-5, atol=1e-5)
    assert batch.token_ids.tolist() == batch.positions.tolist()


def test_hookpoints_with_different_grids_are_refused(tmp_path) -> None:
    loaded = tiny_resnet()
    transform = model_transform(loaded, SIZE)
    assert token_layout(loaded, transform, ["resid.0"]).grid == (8, 8)
    with pytest.raises(ValueError, match="lay images out differently"):
        token_layout(loaded, transform, ["resid.0", "resid.1"])


def test_vit_layout_is_measured() -> None:
    loaded = tiny_dinov2(registers=2)
    layout = token_layout(loaded, model_transform(loaded, 16), ["resid.0", "resid.1"])
    assert (layout.n_prefix, layout.grid, layout.kind) == (3, (4, 4), "patches")


def test_torchvision_gives_a_clear_error_or_loads(tmp_path) -> None:
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ImportError, match="torchvision does not import here"):
            load_vision_model("torchvision:resnet18:/nowhere.pth")
    else:
        with pytest.raises(FileNotFoundError, match="ARCH:WEIGHTS"):
            load_vision_model("torchvision:resnet18:/nowhere.pth")


def test_hookpoints_command_lists_vision_models(tmp_path, capsys) -> None:
    from sparselens.cli.main import main

    tiny_resnet(tmp_path / "resnet")
    tiny_dinov2().model.save_pretrained(tmp_path / "vit")
    assert is_vision_source(str(tmp_path / "resnet")) and is_vision_source(str(tmp_path / "vit"))
    assert main(["hookpoints", str(tmp_path / "resnet"), "--size", "32"]) == 0
    out = capsys.readouterr().out
    widths = dict(line.split() for line in out.splitlines() if line.startswith("encoder.stages.")
                  and len(line.split()) == 2)
    assert widths["encoder.stages.0"] == "8" and widths["encoder.stages.1"] == "16"  # channels
    assert "resid.L -> encoder.stages.0" in out
    assert main(["hookpoints", str(tmp_path / "vit"), "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert any(line.split() == ["encoder.layer.1", "32"] for line in out.splitlines())
