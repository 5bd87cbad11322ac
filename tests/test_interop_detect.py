"""Format detection, malformed-file errors and ``sparselens convert``, without peer packages.

Files are written by sparselens's own SAELens writer and by hand in the other libraries'
layouts, then damaged in the ways users meet: missing tensors, wrong shapes, NaN weights,
truncated files, configs from another format.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sparselens.cli.main import main
from sparselens.dictionaries import REGISTRY, build
from sparselens.io.detect import detect, load_any
from sparselens.io.native import save_dictionary
from sparselens.io.saelens import load_saelens
from sparselens.io.saelens_export import save_saelens


def topk(seed: int = 0):
    torch.manual_seed(seed)
    d = build("topk", d_in=8, n_latents=24, k=3, hookpoint="resid.1")
    with torch.no_grad():
        d.b_enc.normal_()
        d.b_dec.normal_()
    return d


def saelens_folder(tmp_path):
    folder = tmp_path / "sae"
    save_saelens(topk(), folder)
    return folder


def test_every_format_is_detected_from_its_weights_file(tmp_path):
    save_dictionary(topk(), tmp_path / "native")
    save_saelens(topk(), tmp_path / "saelens")
    expectations = {"native": "native", "saelens": "saelens"}
    for folder, name in expectations.items():
        found, _ = detect(tmp_path / folder)
        assert found.name == name
    found, target = detect(tmp_path / "saelens" / "cfg.json")
    assert found.name == "saelens" and target == tmp_path / "saelens"
    for marker, name in [("sae.safetensors", "sparsify"), ("params.npz", "gemmascope"),
                         ("ae.pt", "dictionary_learning")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / marker).write_bytes(b"")
        assert detect(tmp_path / name)[0].name == name


def test_native_and_saelens_round_trip_give_the_same_function(tmp_path):
    original = topk()
    original.cfg.input_scale = original.cfg.output_scale = 3.0
    save_saelens(original, tmp_path / "s")
    save_dictionary(load_any(tmp_path / "s"), tmp_path / "n")
    back = load_any(tmp_path / "n")
    x = torch.randn(32, 8)
    with torch.no_grad():
        assert torch.allclose(back.encode(x), original.encode(x), atol=1e-5)
        assert torch.allclose(back(x), original(x), atol=1e-5)
    assert back.cfg.hookpoint == "resid.1" and back.cfg.input_scale == 1.0


@pytest.mark.parametrize("damage, error, message", [
    (lambda s: s.pop("b_enc"), ValueError, r"missing tensor\(s\) \['b_enc'\]"),
    (lambda s: s.update(W_enc=s["W_enc"].T.contiguous()), ValueError, "has shape"),
    (lambda s: s["W_dec"].__setitem__((0, 0), float("nan")), ValueError, "NaN"),
    (lambda s: s.update(b_dec=s["b_dec"].clone().fill_(float("inf"))), ValueError, "infinite"),
])
def test_malformed_saelens_weights_are_refused(tmp_path, damage, error, message):
    folder = saelens_folder(tmp_path)
    state = load_file(folder / "sae_weights.safetensors")
    damage(state)
    save_file(state, folder / "sae_weights.safetensors")
    with pytest.raises(error, match=message) as info:
        load_any(folder)
    assert "sae_weights.safetensors" in str(info.value)


def test_malformed_saelens_files_are_refused(tmp_path):
    folder = saelens_folder(tmp_path)
    weights = (folder / "sae_weights.safetensors").read_bytes()
    (folder / "sae_weights.safetensors").write_bytes(weights[:100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_any(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_any(folder)
    (folder / "cfg.json").write_text(json.dumps({"architecture": "topk"}))
    with pytest.raises(ValueError, match=r"lacks \['d_in', 'd_sae'\]"):
        load_any(folder)
    (folder / "cfg.json").unlink()
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_any(folder)


def test_config_that_contradicts_the_weights_is_refused(tmp_path):
    folder = saelens_folder(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 30}))
    with pytest.raises(ValueError, match="do not belong together"):
        load_any(folder)
    (folder / "cfg.json").write_text(json.dumps({**cfg, "k": 99}))
    with pytest.raises(ValueError, match="k must be"):
        load_any(folder)


def test_pre_6_saelens_config_is_understood(tmp_path):
    folder = saelens_folder(tmp_path)
    old = {"d_in": 8, "d_sae": 24, "hook_point": "blocks.0.hook_resid_pre",
           "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3},
           "normalize_activations": False, "apply_b_dec_to_input": True}
    (folder / "cfg.json").write_text(json.dumps(old))
    ours = load_saelens(folder)
    assert ours.architecture == "topk" and ours.cfg.k == 3
    assert ours.cfg.hookpoint == "resid_pre.0"


def test_missing_variant_gives_a_not_supported_yet_error(tmp_path, monkeypatch):
    folder = saelens_folder(tmp_path)
    monkeypatch.delitem(REGISTRY, "topk")
    with pytest.raises(ValueError, match="does not have yet"):
        load_any(folder)


def test_unknown_paths_and_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_any(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no dictionary found"):
        load_any(tmp_path / "empty")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a file sparselens recognises"):
        load_any(tmp_path / "model.bin")
    folder = saelens_folder(tmp_path)
    with pytest.raises(ValueError, match="do not apply to saelens"):
        load_any(folder, hookpoint="x")
    with pytest.raises(ValueError, match="unknown format"):
        load_any(folder, format="onnx")
    (folder / "sae.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="several formats"):
        load_any(folder)
    assert load_any(folder, format="saelens").architecture == "topk"
    assert load_any(folder, format="saelens", dtype="bfloat16").W_enc.dtype == torch.bfloat16


def test_dictionary_learning_file_errors(tmp_path):
    d = topk()
    state = {"encoder.weight": d.W_enc.detach().T.clone(), "encoder.bias": d.b_enc.detach(),
             "decoder.weight": d.W_dec.detach().T.clone(), "b_dec": d.b_dec.detach(),
             "k": torch.tensor(3), "threshold": torch.tensor(-1.0)}
    torch.save(state, tmp_path / "ae.pt")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_any(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "Foo"}}))
    with pytest.raises(ValueError, match="'Foo' is not supported"):
        load_any(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(
        {"trainer": {"dict_class": "AutoEncoderTopK", "k": 4}}))
    with pytest.raises(ValueError, match="do not belong together"):
        load_any(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(
        {"trainer": {"dict_class": "AutoEncoderTopK", "k": 3}}))
    x = torch.randn(16, 8)
    with torch.no_grad():
        assert torch.allclose(load_any(tmp_path).encode(x), d.encode(x), atol=1e-6)
    (tmp_path / "ae.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable PyTorch state dict"):
        load_any(tmp_path)


def test_convert_command(tmp_path, capsys):
    save_dictionary(topk(), tmp_path / "native")
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "out"),
                 "--to", "saelens"]) == 0
    assert (tmp_path / "out" / "sae_weights.safetensors").exists()
    assert "saelens format" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "out")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "out"), str(tmp_path / "back")]) == 0
    assert load_any(tmp_path / "back").architecture == "topk"


def test_loaded_dictionaries_are_ordinary_sparselens_dictionaries(tmp_path):
    """Evaluation, interpretation and steering use the same methods training does."""
    from sparselens.dictionaries import Dictionary

    loaded = load_any(saelens_folder(tmp_path))
    assert isinstance(loaded, Dictionary) and type(loaded) is REGISTRY["topk"]
    out = loaded.training_loss(torch.randn(16, 8))
    out.loss.backward()
    assert loaded.W_enc.grad is not None and out.codes.shape == (16, 24)


def test_export_refuses_a_mapping_that_would_change_the_codes(tmp_path, monkeypatch):
    """The numeric guard: pretend AbsTopK (signed codes) were SAELens's TopK."""
    from sparselens.io import saelens_export

    monkeypatch.setitem(saelens_export.EXPORT_KINDS, "abstopk", "topk")
    with pytest.raises(ValueError, match="would encode differently"):
        save_saelens(build("abstopk", d_in=8, n_latents=24, k=3), tmp_path / "out")
    assert not (tmp_path / "out").exists()
