"""Native checkpoints: scales folded on save, checksums and shapes verified on load."""

from __future__ import annotations

import json

import pytest
import torch

from sparselens.dictionaries import build
from sparselens.io.native import CONFIG_FILE, WEIGHTS_FILE, load_dictionary, save_dictionary


def _randomised(**kw):
    torch.manual_seed(0)
    d = build("topk", d_in=8, n_latents=16, k=4, **kw)
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return d


@pytest.mark.parametrize("kw, scales", [
    ({}, (2.5, 2.5)),
    ({"d_out": 5, "pre_encoder_bias": False, "skip_connection": True}, (2.0, 3.0)),
])
def test_save_folds_scales_and_round_trips(tmp_path, kw, scales):
    d = _randomised(**kw)
    d.cfg.input_scale, d.cfg.output_scale = scales
    x = torch.randn(6, 8)
    before_out, before_codes = d(x), d.encode(x)
    save_dictionary(d, tmp_path / "ck")
    loaded = load_dictionary(tmp_path / "ck")
    assert loaded.cfg.input_scale == 1.0 and loaded.cfg.output_scale == 1.0
    assert d.cfg.input_scale == scales[0], "saving must not modify the live module"
    torch.testing.assert_close(loaded(x), before_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded.encode(x), before_codes, atol=1e-5, rtol=1e-5)


def test_truncated_weights_are_refused(tmp_path):
    save_dictionary(_randomised(), tmp_path / "ck")
    weights = tmp_path / "ck" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_dictionary(tmp_path / "ck")


def test_unknown_config_field_is_named(tmp_path):
    save_dictionary(_randomised(), tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / CONFIG_FILE).read_text())
    meta["config"]["kk"] = 3
    (tmp_path / "ck" / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown config field.*kk"):
        load_dictionary(tmp_path / "ck")


def test_missing_checkpoint_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_dictionary(tmp_path / "nope")


def test_bad_configs_are_explained():
    with pytest.raises(ValueError, match="k must be .*1..n_latents"):
        build("topk", d_in=8, n_latents=16, k=17)
    with pytest.raises(ValueError, match="unknown architecture"):
        build("nope", d_in=8, n_latents=16)
    with pytest.raises(ValueError, match="pre_encoder_bias"):
        build("topk", d_in=8, n_latents=16, k=2, d_out=4)


def test_atomic_dir_is_whole_or_absent_and_keeps_the_first_finisher(tmp_path) -> None:
    from sparselens.core.atomic import atomic_dir

    def broken(folder):
        (folder / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_dir(tmp_path / "m", broken)
    assert list(tmp_path.iterdir()) == []
    atomic_dir(tmp_path / "m", lambda f: (f / "a").write_text("first"))
    atomic_dir(tmp_path / "m", lambda f: (f / "a").write_text("second"))
    assert (tmp_path / "m" / "a").read_text() == "first" and (tmp_path / "m" / "COMPLETE").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
