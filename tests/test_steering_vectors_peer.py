"""Dense steering side by side with the PyPI `steering-vectors` package (0.12.2): the same
mean-difference vector, and the same logits and greedy generation when it is added.

The package needs transformers < 5, so it lives in a venv of its own (`make steervec`, or
SPARSELENS_STEERVEC_VENV); the test is skipped when that venv is absent."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from sparselens.lens import AddVector, Lens
from sparselens.steering import mean_difference_vector
from steering_helpers import steerable_llama

ROOT = Path(__file__).resolve().parents[1]
SIDE_SCRIPT = Path(__file__).parent / "peers" / "steering_vectors_side.py"
PAIRS = [("I love this, it is wonderful", "I hate this, it is awful"),
         ("what a great day", "what a bad day"), ("so happy", "so sad")]


def steervec_python() -> Path | None:
    candidates = [os.environ.get("SPARSELENS_STEERVEC_VENV"), ROOT / ".venvs" / "steervec",
                  "/work/venvs/steervec"]
    for venv in filter(None, candidates):
        python = Path(venv) / "bin" / "python"
        if python.exists():
            return python
    return None


pytestmark = pytest.mark.skipif(steervec_python() is None,
                                reason="no steering-vectors venv (run `make steervec`)")


def test_same_vector_same_outputs(tmp_path):
    """On a Llama. (Not GPT-2: there transformers 4.57 and 5 already disagree on the unedited
    forward, by up to 0.06 in block 1's output of the tiny model, so no steering comparison
    across the two venvs can be exact.)"""
    loaded, layer = steerable_llama(), 2
    loaded.model.save_pretrained(tmp_path / "model")
    loaded.tokenizer.save_pretrained(tmp_path / "model")
    spec = {"pairs": PAIRS, "layer": layer, "multiplier": 4.0, "prompt": "Today I feel",
            "max_new_tokens": 8,
            "special_tokens": {k: getattr(loaded.tokenizer, k) for k in
                               ("bos_token", "eos_token", "pad_token")}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([str(steervec_python()), str(SIDE_SCRIPT), str(tmp_path / "model"),
                           str(tmp_path / "spec.json")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    peer = json.loads(done.stdout.strip().splitlines()[-1])

    lens = Lens(loaded)
    hookpoint = f"resid.{layer}"
    vector = mean_difference_vector(lens, hookpoint, [p for p, _ in PAIRS],
                                    [n for _, n in PAIRS])
    torch.testing.assert_close(vector, torch.tensor(peer["vector"]), atol=1e-5, rtol=1e-5)
    edit = AddVector(hookpoint, vector, coef=spec["multiplier"])
    logits = lens.forward([spec["prompt"]], edits=[edit]).logits[0]
    torch.testing.assert_close(logits, torch.tensor(peer["logits"]), atol=1e-4, rtol=1e-4)
    gen = lens.generate(spec["prompt"], max_new_tokens=8, edits=[edit])
    assert gen.ids[0, gen.prompt_length:].tolist() == peer["generated"]
    unsteered = lens.generate(spec["prompt"], max_new_tokens=8)
    assert unsteered.ids.tolist() != gen.ids.tolist()   # the vector does something
