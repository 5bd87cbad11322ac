"""Image examples in the report and the viewer: top images with heat maps over the picture
(a tiny DINOv2 and a small TopK trained in code on pictures with one bright square)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sparselens.data.cache import ActivationCache
from sparselens.data.harvest import HarvestConfig
from sparselens.data.image_harvest import harvest_images
from sparselens.data.images import folder_images

Image = pytest.importorskip("PIL.Image")
from test_vision import SIZE, tiny_dinov2  # noqa: E402

HOOK = "resid.1"


def square_images(folder: Path, n: int) -> None:
    """Dark noisy pictures, each with one bright square in a random cell of the 4x4 grid."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(0, 40, (SIZE, SIZE, 3)).astype(np.uint8)
        r, c = (int(v) for v in rng.integers(0, 4, 2))
        pixels[4 * r:4 * r + 4, 4 * c:4 * c + 4] = rng.integers(150, 255, 3)
        Image.fromarray(pixels).save(folder / f"sq{i:03d}.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_image_run(tmp_path_factory.mktemp("vision-report"))


def make_image_run(root: Path):
    """Harvest 24 square pictures with a tiny DINOv2 and train a 16-latent TopK on them."""
    from sparselens.pipelines.train import train_on_cache
    from sparselens.training.config import LogConfig, TrainConfig

    square_images(root / "imgs", 24)
    cfg = HarvestConfig(storage_dtype="float32", batch_size=8, shard_tokens=128,
                        progress=False, heldout_fraction=0.2)
    harvest_images(tiny_dinov2(), folder_images(root / "imgs"), [HOOK], root / "cache", SIZE,
                   cfg, source=str(root / "imgs"))
    train = TrainConfig(architecture="topk", n_latents=16, dictionary={"k": 3}, n_tokens=3000,
                        batch_size=64, log=LogConfig(progress=False))
    result = train_on_cache(train, ActivationCache.open(root / "cache"), root / "sae")
    return root, result.dictionary


def direct_heat(dictionary, cache: ActivationCache, seq: int, latent: int) -> torch.Tensor:
    """The latent's code on every patch of image `seq`, straight from the cache rows."""
    batch = next(cache.batches(100_000, [HOOK], split="all", shuffle=False))
    rows = batch.seq_ids == seq
    codes = dictionary.encode(batch.acts[HOOK][rows]).detach()[:, latent]
    heat = torch.zeros(16)
    heat[batch.positions[rows] - 1] = codes  # one prefix token (CLS)
    return heat


def overlay_alpha(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    return np.asarray(png.convert("RGBA"))[..., 3]


def test_report_has_pictures_with_heat_maps_where_the_latent_fires(trained) -> None:
    from sparselens.pipelines.report import ReportConfig, write_feature_report

    root, dictionary = trained
    result = write_feature_report(ReportConfig(checkpoint=str(root / "sae"),
                                               cache=str(root / "cache"), out=str(root / "rep"),
                                               n_images=4))
    text = (root / "rep" / "data.js").read_text()
    data = json.loads(text[text.index("{"):text.rindex("}") + 1])
    images = data["images"]
    assert images["grid"] == [4, 4] and images["problem"] is None
    assert len(images["features"]) >= 4
    cache = ActivationCache.open(root / "cache")
    checked = 0
    for latent, entries in images["features"].items():
        assert 1 <= len(entries) <= 4
        assert len({e["image"] for e in entries}) == len(entries)  # distinct images
        acts = [e["act"] for e in entries]
        assert acts == sorted(acts, reverse=True)
        for entry in entries:
            assert (root / "rep" / entry["src"]).is_file()
            alpha = overlay_alpha(entry["overlay"])
            heat = direct_heat(dictionary, cache, entry["image"], int(latent)).reshape(4, 4)
            # the overlay is most opaque exactly where the activation is largest
            assert divmod(int(alpha.argmax()), 4) == divmod(int(heat.argmax()), 4)
            assert tuple(entry["patch"]) == divmod(int(heat.argmax()), 4)
            assert abs(float(heat.max()) - entry["act"]) < 1e-3 * max(1.0, entry["act"])
            assert (alpha[heat.numpy() == 0] == 0).all()  # quiet patches stay transparent
            top, left, bottom, right = entry["crop"]
            assert top <= entry["patch"][0] < bottom and left <= entry["patch"][1] < right
            checked += 1
    assert checked >= 4
    picture = Image.open(root / "rep" / images["features"][latent][0]["src"])
    assert picture.size == (SIZE, SIZE)
    assert "sparselensImages" in (root / "rep" / "index.html").read_text()
    saved = result.examples  # the text part still works: token ids are patch indices
    assert saved.top.positions.max() <= 16


def test_viewer_feature_page_sends_heat_maps(trained) -> None:
    from starlette.testclient import TestClient

    from sparselens.interpretation.store import load_or_collect
    from sparselens.server.launch import build_app, open_stores

    root, dictionary = trained
    load_or_collect(root / "sae", dictionary, root / "cache")
    assert (root / "sae" / "examples" / "images.json").is_file()
    described = json.loads((root / "sae" / "examples" / "images.json").read_text())
    assert described["grid_shape"] == [4, 4] and described["prefix_tokens"] == 1
    stores = open_stores([root / "sae"], examples=[root / "sae" / "examples"])
    client = TestClient(build_app(stores, None),
                        base_url="http://127.0.0.1")
    cache = ActivationCache.open(root / "cache")
    live = (dictionary.encode(next(cache.batches(100_000, [HOOK], split="all")).acts[HOOK])
            .detach() > 0).any(0).nonzero().squeeze(1).tolist()
    for latent in live[:4]:
        page = client.get(f"/api/d/sae/feature/{latent}").json()
        top = page["images"]["top"]
        assert top, "a live latent has top images"
        for entry in top:
            heat = torch.tensor(entry["heat"])
            expected = direct_heat(dictionary, cache, entry["image"], latent)
            torch.testing.assert_close(heat, expected, rtol=2e-3, atol=2e-3)
            assert divmod(int(overlay_alpha(entry["overlay"]).argmax()), 4) == \
                tuple(entry["patch"]) == divmod(int(heat.argmax()), 4)
            assert entry["src"].startswith("data:image/png;base64,")
        # the page's text examples are the same patches, and the script is served
        assert page["top"][0]["pos"] - 1 == 4 * top[0]["patch"][0] + top[0]["patch"][1]
    script = client.get("/assets/images.js")
    assert script.status_code == 200 and "sparselensImages" in script.text
