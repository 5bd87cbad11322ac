"""Gemma Scope files in the published layouts give the JumpReLU codes computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from sparselens.dictionaries import REGISTRY
from sparselens.io.detect import load_any

D, N = 16, 40


@pytest.fixture(autouse=True)
def _needs_jumprelu():
    if "jumprelu" not in REGISTRY:
        pytest.skip("sparselens variant 'jumprelu' is not registered yet")


def published_arrays(d_out: int = D, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W_enc": rng.standard_normal((D, N)).astype(np.float32) / np.sqrt(D),
        "W_dec": rng.standard_normal((N, d_out)).astype(np.float32),
        "b_enc": (0.3 * rng.standard_normal(N)).astype(np.float32),
        "b_dec": (0.5 * rng.standard_normal(d_out)).astype(np.float32),
        "threshold": (0.2 + 0.5 * rng.random(N)).astype(np.float32),
    }


def by_hand(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gemma Scope's JumpReLU: no input centring, ReLU masked by ``pre > threshold``."""
    pre = x @ p["W_enc"] + p["b_enc"]
    codes = (pre > p["threshold"]) * np.maximum(pre, 0)
    out = codes @ p["W_dec"] + p["b_dec"]
    if "affine_skip_connection" in p:
        out = out + x @ p["affine_skip_connection"]
    return codes, out


def check(ours, params: dict[str, np.ndarray]) -> None:
    x = np.random.default_rng(1).standard_normal((64, D)).astype(np.float32) * 1.5
    codes, out = by_hand(params, x)
    assert 0.05 < (codes != 0).mean() < 0.9, "degenerate test inputs"
    with torch.no_grad():
        got_codes = ours.encode(torch.from_numpy(x)).numpy()
        got_out = ours(torch.from_numpy(x)).numpy()
    for name, diff in (("codes", got_codes - codes), ("output", got_out - out)):
        print(f"gemmascope {name}: max|diff| = {np.abs(diff).max():.2e}")
        assert np.abs(diff).max() <= 1e-5


def test_params_npz_loads_as_jumprelu(tmp_path):
    params = published_arrays()
    np.savez(tmp_path / "params.npz", **params)
    ours = load_any(tmp_path)
    assert ours.architecture == "jumprelu" and not ours.cfg.pre_encoder_bias
    check(ours, params)
    check(load_any(tmp_path / "params.npz"), params)


def test_gemma_scope_2_skip_transcoder(tmp_path):
    params = published_arrays(d_out=D)
    rng = np.random.default_rng(5)
    params["affine_skip_connection"] = (0.1 * rng.standard_normal((D, D))).astype(np.float32)
    stored = {("w_" + k[2:] if k.startswith("W_") else k): v for k, v in params.items()}
    save_file(stored, str(tmp_path / "params.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "jump_relu", "model_name": "gemma-v3-270m-pt",
        "hf_hook_point_in": "model.layers.5.pre_feedforward_layernorm.output",
        "hf_hook_point_out": "model.layers.5.post_feedforward_layernorm.output"}))
    ours = load_any(tmp_path)
    assert ours.cfg.skip_connection
    assert ours.cfg.hookpoint == "model.layers.5.pre_feedforward_layernorm"
    assert ours.cfg.target_hookpoint == "model.layers.5.post_feedforward_layernorm"
    check(ours, params)


def test_negative_thresholds_behave_as_zero(tmp_path):
    params = published_arrays()
    params["threshold"][:10] = -1.0
    np.savez(tmp_path / "params.npz", **params)
    check(load_any(tmp_path), params)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.pop("threshold"), "missing tensor"),
    (lambda p: p.update(b_enc=p["b_enc"][:-1]), "has shape"),
    (lambda p: p["W_dec"].__setitem__((0, 0), np.nan), "NaN"),
])
def test_malformed_npz_is_refused_with_the_file_named(tmp_path, damage, message):
    params = published_arrays()
    damage(params)
    np.savez(tmp_path / "params.npz", **params)
    with pytest.raises(ValueError, match=message) as info:
        load_any(tmp_path)
    assert "params.npz" in str(info.value)


def test_truncated_npz_is_refused(tmp_path):
    np.savez(tmp_path / "params.npz", **published_arrays())
    data = (tmp_path / "params.npz").read_bytes()
    (tmp_path / "params.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_any(tmp_path)
