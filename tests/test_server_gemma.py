"""The viewer's model endpoints on the embedded gemma-3-270m (slow: loads the model)."""

from __future__ import annotations

import pytest
import torch

from sparselens.dictionaries import build
from sparselens.io.native import save_dictionary
from sparselens.server.launch import build_app, open_stores

pytestmark = pytest.mark.slow


def test_playground_and_logit_lens_on_gemma(gemma, tmp_path):
    from starlette.testclient import TestClient

    from sparselens.lens import Lens

    torch.manual_seed(0)
    sae = build("topk", d_in=640, n_latents=1024, k=16, hookpoint="resid.6",
                model="gemma-3-270m")
    save_dictionary(sae, tmp_path / "sae")
    stores = open_stores([tmp_path / "sae"])
    client = TestClient(build_app(stores, gemma), base_url="http://127.0.0.1")
    text = "The Eiffel Tower is in Paris."
    data = client.post("/api/playground", json={"text": text, "dictionary": "sae",
                                                "latent": 7}).json()
    assert data["tokens"][0] == "<bos>" and data["special"][0] is True
    assert " Paris" in data["tokens"]
    codes = Lens(gemma, {"sae": stores[0].module()}).encode(text).codes["sae"].dense()[0]
    assert data["acts"] == pytest.approx(codes[:, 7].tolist(), abs=1e-3)
    assert all(len(f) == 8 for f, s in zip(data["firing"], data["special"]) if not s)
    lens = client.get("/api/d/sae/feature/7/logit-lens").json()
    logits = gemma.model.get_output_embeddings().weight.float() @ stores[0].decoder_row(7)
    assert [e["value"] for e in lens["top"]] == pytest.approx(
        logits.topk(10).values.tolist(), abs=1e-3)
